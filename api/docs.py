"""OpenAPI docs: `/openapi.json` (built by sanic-ext), Swagger UI at `/docs`, ReDoc at `/redoc`, offline.

sanic-ext's own doc pages load Swagger UI and ReDoc from CDNs (and its OAuth2 redirect page fetches
one on every request), so they are switched off; this module serves two small pages of its own and
the UI bundles shipped by the `openapi-ui-bundles` package, under a strict CSP. sanic-ext still
builds the document; just before it does (a `before_server_start` listener that runs ahead of
sanic-ext's), every route named in `api/docs_catalog.py` gets its summary, bearer security,
request and response schemas from the pydantic models of `api/protocol.py`, the README examples,
and the OpenAI error envelope for each error status.

pydantic writes JSON Schema 2020-12 while sanic-ext declares OpenAPI 3.0.3, so `to_oas30` rewrites
the few constructs 3.0 lacks (null types, `const`, `examples` lists, numeric exclusive bounds).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import openapi_ui_bundles
from pydantic import BaseModel
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse, file
from sanic_ext import openapi
from sanic_ext.extensions.openapi.builders import OperationBuilder, OperationStore, SpecificationBuilder
from sanic_ext.extensions.openapi.definitions import Parameter, RequestBody, Response

from api import auth
from api.docs_catalog import ENDPOINTS, ERROR_EXAMPLES, SSE_EXAMPLE, Endpoint
from api.http import NOSNIFF, page_headers
from api.protocol_responses import ErrorResponse
from api.system import VERSION
from errors import NotFound

PAGES = Path(__file__).resolve().parent / "docs_pages"
REF = "#/components/schemas/{model}"
PATH_PARAM = re.compile(r"<(\w+)(?::[^>]*)?>")  # Sanic's <name:str> is OpenAPI's {name}
SECURITY = "bearerAuth"
BUNDLES = {
    "swagger-ui": (openapi_ui_bundles.swagger_ui.static_path, {"swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"}),
    "redoc": (openapi_ui_bundles.redoc.static_path, {"redoc.standalone.js", "logo-mini.svg"}),
}
# ReDoc's sidebar shows its logo from a CDN; the package ships the same file, so point there instead.
REWRITES = {("redoc", "redoc.standalone.js"): (b"https://cdn.redoc.ly/redoc/logo-mini.svg", b"/docs/assets/redoc/logo-mini.svg")}
MIME = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}
# Both UIs inject inline styles and ReDoc runs its search in a blob: worker; scripts stay 'self'.
PAGE_HEADERS = page_headers(
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
# The schema of one event (as OpenAPI 3.2's `itemSchema` and schemathesis read it), not of the whole stream.
SSE_EVENT_SCHEMA = {
    "type": "object",
    "description": "One Server-Sent Event: `data` is a JSON chunk, a JSON error envelope, or `[DONE]`.",
    "required": ["data"],
    "properties": {"data": {"type": "string"}, "event": {"type": "string"}, "id": {"type": "string"}},
}
TAGS = {
    "System": "Public information about the server.",
    "OpenAI": "OpenAI-compatible endpoints: any OpenAI client works against `/v1`.",
    "Training": "Prompt/response datasets stored as JSONL.",
    "Observability": "Metrics and the live status dashboard.",
}
DESCRIPTION = """A local OpenAI-compatible server running `.gguf` chat models with GPT4All and sentence-transformers
embeddings.

**Authentication.** Everything under `/v1` and `/metrics` needs `Authorization: Bearer <key>` (one of `API_KEYS`);
`/`, `/health`, `/status`, `/chat` and these docs are public.

**Errors.** Every error body is OpenAI's envelope `{"error": {"message", "type", "param", "code"}}` (schema
`ErrorResponse`). A full queue answers 429 with `Retry-After`; an error in the middle of a stream is an SSE
`data: {"error": ...}` event followed by `data: [DONE]`.
"""

bp = Blueprint("docs")


@bp.get("/redoc")
@openapi.exclude()
async def redoc_page(request: Request) -> HTTPResponse:
    return _page("redoc.html")


@bp.get("/docs/assets/swagger-init.js")
@openapi.exclude()
async def swagger_init(request: Request) -> HTTPResponse:
    return await file(PAGES / "swagger-init.js", mime_type=MIME[".js"], headers=NOSNIFF)


@bp.get("/docs/assets/<bundle:str>/<name:str>")
@openapi.exclude()
async def bundle_asset(request: Request, bundle: str, name: str) -> HTTPResponse:
    folder, allowed = BUNDLES.get(bundle, (None, set()))
    if name not in allowed:
        raise NotFound(f"Unknown asset {bundle}/{name}")
    headers = {**NOSNIFF, "Cache-Control": "public, max-age=86400"}
    mime = MIME[Path(name).suffix]
    if (bundle, name) in REWRITES:
        return HTTPResponse(_rewritten(bundle, name), headers=headers, content_type=mime)
    return await file(Path(folder) / name, mime_type=mime, headers=headers)


@openapi.exclude()
async def swagger_page(request: Request) -> HTTPResponse:
    return _page("swagger.html")


@lru_cache(maxsize=None)
def _rewritten(bundle: str, name: str) -> bytes:
    old, new = REWRITES[(bundle, name)]
    return (Path(BUNDLES[bundle][0]) / name).read_bytes().replace(old, new)


def _page(name: str) -> HTTPResponse:
    body = (PAGES / name).read_text(encoding="utf-8")
    return HTTPResponse(body, headers=PAGE_HEADERS, content_type="text/html; charset=utf-8")


def install(app: Sanic) -> None:
    """Point sanic-ext's OpenAPI at `/openapi.json` with no CDN pages, and serve our own."""
    config = app.config
    config.OAS_URL_PREFIX = ""  # sanic-ext's spec route becomes /openapi.json
    config.OAS_URI_TO_JSON = "/openapi.json"
    config.OAS_UI_SWAGGER = False
    config.OAS_UI_REDOC = False
    config.OAS_UI_DEFAULT = None
    config.API_TITLE = "GPT4All OpenAI-compatible server"
    config.API_VERSION = VERSION
    config.API_DESCRIPTION = DESCRIPTION
    app.blueprint(bp)
    # sanic-ext's start-up banner looks up the route "openapi.index" to print the docs URL; ours is /docs.
    app.add_route(swagger_page, "/docs", name="openapi.index")

    @app.before_server_start  # priority 0: before sanic-ext's spec builder (priority -1000)
    async def document_routes(app: Sanic) -> None:
        describe(app)


def describe(app: Sanic) -> None:
    """Attach the catalog's documentation to the handlers of the routes that exist (idempotent)."""
    spec = SpecificationBuilder()
    spec.add_security_scheme(SECURITY, "http", bearer_format="API key", description="One of `API_KEYS`.")
    for name, text in TAGS.items():
        spec.tag(name, text)
    store = OperationStore()
    for route in app.router.routes:
        for method in route.methods:
            path = PATH_PARAM.sub(r"{\1}", f"/{route.path}")
            endpoint = ENDPOINTS.get((method, path))
            if endpoint is not None:
                store[route.handler] = _operation(endpoint, protected=auth.is_protected(path))


def _operation(endpoint: Endpoint, *, protected: bool) -> OperationBuilder:
    op = OperationBuilder()
    op.describe(summary=endpoint.summary, description=endpoint.description)
    op.tag(endpoint.tag)
    op.name(endpoint.operation_id)
    op.disable_autodoc()  # handler docstrings are written for developers, not API users
    if protected:
        op.secured(SECURITY)
    if endpoint.body:
        media = {"schema": model_schema(endpoint.body)}
        if endpoint.examples:
            media["examples"] = endpoint.examples
        op.requestBody = RequestBody({"application/json": media}, required=True)
    for query in endpoint.query:
        op.parameters.append(Parameter(query.name, query.schema, "query", description=query.description, required=False))
    op.responses = {200: Response(_success_content(endpoint), description="OK")}
    for status, (description, example) in endpoint.other_responses.items():
        op.responses[status] = Response({"application/json": {"schema": {"type": "object"}, "example": example}},
                                        description=description)
    for status in ((401,) if protected else ()) + endpoint.errors:
        example = ERROR_EXAMPLES[status]
        op.responses[status] = Response(
            {"application/json": {"schema": model_schema(ErrorResponse), "example": example.body()}}, description=example.summary
        )
    return op


def _success_content(endpoint: Endpoint) -> dict[str, Any]:
    if endpoint.content_type != "application/json":
        return {endpoint.content_type: {"schema": {"type": "string"}}}
    media: dict[str, Any] = {"schema": model_schema(endpoint.response) if endpoint.response else {"type": "object"}}
    if endpoint.response_example is not None:
        media["example"] = endpoint.response_example
    content = {"application/json": media}
    if endpoint.stream:
        content["text/event-stream"] = {"schema": SSE_EVENT_SCHEMA, "example": SSE_EXAMPLE}
    if endpoint.operation_id == "getMetrics":
        content["text/plain"] = {"schema": {"type": "string"}, "example": '# TYPE llm_server_requests_total counter\n'
                                 'llm_server_requests_total{endpoint="/v1/models",method="GET",status="200"} 3.0\n'}
    return content


def model_schema(model: type[BaseModel]) -> dict[str, str]:
    """Register `model` (and the models it uses) as components; return a `$ref` to it."""
    spec = SpecificationBuilder()
    name = model.__name__
    if not spec.has_component("schemas", name):
        schema = to_oas30(model.model_json_schema(ref_template=REF))
        for sub_name, sub_schema in schema.pop("$defs", {}).items():
            spec.add_component("schemas", sub_name, sub_schema)
        spec.add_component("schemas", name, schema)
    return {"$ref": REF.format(model=name)}


SCHEMA_MAPS = ("properties", "$defs", "patternProperties")
VALUE_KEYS = ("default", "example", "enum")
NULL = {"type": "null"}


def to_oas30(node: Any) -> Any:
    """Rewrite a pydantic (JSON Schema 2020-12) schema into the OpenAPI 3.0 dialect."""
    if isinstance(node, list):
        return [to_oas30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if isinstance(options, list) and NULL in options:
            rest = [option for option in options if option != NULL]
            del node[key]
            node["nullable"] = True
            if len(rest) == 1 and "$ref" in rest[0]:
                node["allOf"] = rest  # 3.0 ignores siblings of $ref
            elif len(rest) == 1:
                node = {**rest[0], **node}
            else:
                node[key] = rest
    if node.get("type") == "null":
        del node["type"]
        node.update(nullable=True, enum=[None])
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if isinstance(node.get("examples"), list):
        examples = node.pop("examples")
        if examples:
            node["example"] = examples[0]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(node.get(exclusive), (int, float)) and not isinstance(node[exclusive], bool):
            node[bound], node[exclusive] = node[exclusive], True
    out = {}
    for key, value in node.items():
        if key in SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: to_oas30(schema) for name, schema in value.items()}
        elif key in VALUE_KEYS:
            out[key] = value
        else:
            out[key] = to_oas30(value)
    return out
