"""OpenAPI docs: `/openapi.json` (OpenAPI 3.1), Swagger UI at `/docs`, ReDoc at `/redoc`, all offline.

The document is built here, once, when the server starts: every route named in
`api/docs_catalog.py` that exists gets its summary, bearer security (`api/auth.py`'s rule),
request and response schemas (the pydantic models themselves, whose JSON Schema 2020-12 is
OpenAPI 3.1's own dialect), the README examples, and the OpenAI error envelope for each error
status (`errors.py`'s classes). Nothing else is documented, so no route needs excluding.
sanic-ext's OpenAPI is off: it writes 3.0, and its pages load Swagger UI and ReDoc from CDNs.
The two pages here load the bundles of the `openapi-ui-bundles` package, under a strict CSP.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import openapi_ui_bundles
from pydantic import BaseModel
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse

from api import auth
from api.docs_catalog import ENDPOINTS, ERROR_EXAMPLES, Endpoint
from api.http import ASSET_TYPES, STATIC_HEADERS, json_response, page_headers, serve_file
from api.protocol_responses import ErrorResponse
from api.system import VERSION

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
DESCRIPTION = """A local OpenAI-compatible server running `.gguf` chat models on GPT4All's llama.cpp (our own decode loop) and sentence-transformers
embeddings.

**Authentication.** Everything under `/v1` and `/metrics` needs `Authorization: Bearer <key>` (one of `API_KEYS`);
`/`, `/health`, `/status`, `/chat` and these docs are public.

**Errors.** Every error body is OpenAI's envelope `{"error": {"message", "type", "param", "code"}}` (schema
`ErrorResponse`). A full queue answers 429 with `Retry-After`; an error in the middle of a stream is an SSE
`data: {"error": ...}` event followed by `data: [DONE]`.
"""

bp = Blueprint("docs")
# Files served as they are (Sanic answers If-Modified-Since with 304): (URL, file).
STATIC_FILES = (
    ("/docs/assets/swagger-init.js", PAGES / "swagger-init.js"),
    *((f"/docs/assets/{bundle}/{name}", Path(folder) / name)
      for bundle, (folder, names) in BUNDLES.items() for name in sorted(names) if (bundle, name) not in REWRITES),
)
for url, path in STATIC_FILES:
    serve_file(bp, url, path)


@bp.get("/redoc")
async def redoc_page(request: Request) -> HTTPResponse:
    return _page("redoc.html")


@bp.get("/docs")
async def swagger_page(request: Request) -> HTTPResponse:
    return _page("swagger.html")


def _serve_rewritten(bundle: str, name: str) -> None:
    """Serve the bundle file `name` with its `REWRITES` replacement made (read at the first request)."""
    @lru_cache(maxsize=None)
    def body() -> bytes:
        old, new = REWRITES[(bundle, name)]
        return (Path(BUNDLES[bundle][0]) / name).read_bytes().replace(old, new)

    async def rewritten_asset(request: Request) -> HTTPResponse:
        return HTTPResponse(body(), headers=STATIC_HEADERS, content_type=ASSET_TYPES[Path(name).suffix])

    bp.add_route(rewritten_asset, f"/docs/assets/{bundle}/{name}", name=re.sub(r"\W", "_", f"rewritten_{bundle}_{name}"))


for bundle, name in REWRITES:
    _serve_rewritten(bundle, name)


def _page(name: str) -> HTTPResponse:
    body = (PAGES / name).read_text(encoding="utf-8")
    return HTTPResponse(body, headers=PAGE_HEADERS, content_type="text/html; charset=utf-8")


def install(app: Sanic) -> None:
    """Serve `/openapi.json`, built once the routes are final, and the two pages; sanic-ext's OpenAPI off."""
    app.config.OAS = False
    app.blueprint(bp)
    document: dict[str, Any] = {}

    @app.before_server_start
    async def build_document(app: Sanic) -> None:
        document.update(openapi_document(app))

    @app.get("/openapi.json")
    async def openapi_json(request: Request) -> HTTPResponse:
        return json_response(document)


def openapi_document(app: Sanic) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the catalogued routes that `app` has, in the router's order."""
    schemas: dict[str, Any] = {}
    paths: dict[str, dict[str, Any]] = {}
    for route in app.router.routes:
        path = PATH_PARAM.sub(r"{\1}", f"/{route.path}")
        path_params = [param.name for param in route.params.values()]
        for method in sorted(route.methods):
            endpoint = ENDPOINTS.get((method, path))
            if endpoint is not None:
                paths.setdefault(path, {})[method.lower()] = _operation(endpoint, path_params, auth.is_protected(path), schemas)
    return {
        "openapi": "3.1.0",
        "info": {"title": "GPT4All OpenAI-compatible server", "version": VERSION, "description": DESCRIPTION},
        "tags": [{"name": name, "description": text} for name, text in TAGS.items()],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {SECURITY: {"type": "http", "scheme": "bearer", "bearerFormat": "API key",
                                           "description": "One of `API_KEYS`."}},
        },
    }


def _operation(endpoint: Endpoint, path_params: list[str], protected: bool, schemas: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"tags": [endpoint.tag], "summary": endpoint.summary, "description": endpoint.description,
                          "operationId": endpoint.operation_id}
    parameters = [{"name": query.name, "in": "query", "required": False, "description": query.description,
                   "schema": query.schema} for query in endpoint.query]
    parameters += [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in path_params]
    if parameters:
        op["parameters"] = parameters
    if endpoint.body:
        media: dict[str, Any] = {"schema": model_schema(endpoint.body, schemas)}
        if endpoint.examples:
            media["examples"] = endpoint.examples
        op["requestBody"] = {"required": True, "content": {"application/json": media}}
    responses: dict[str, Any] = {"200": {"description": "OK", "content": _success_content(endpoint, schemas)}}
    for status, (description, example) in endpoint.other_responses.items():
        responses[str(status)] = {"description": description,
                                  "content": {"application/json": {"schema": {"type": "object"}, "example": example}}}
    for status in ((401,) if protected else ()) + endpoint.errors:
        example = ERROR_EXAMPLES[status]
        responses[str(status)] = {"description": example.summary, "content": {
            "application/json": {"schema": model_schema(ErrorResponse, schemas), "example": example.body()}}}
    op["responses"] = responses
    if protected:
        op["security"] = [{SECURITY: []}]
    return op


def _success_content(endpoint: Endpoint, schemas: dict[str, Any]) -> dict[str, Any]:
    if endpoint.content_type != "application/json":
        return {endpoint.content_type: {"schema": {"type": "string"}}}
    media: dict[str, Any] = {"schema": model_schema(endpoint.response, schemas) if endpoint.response else {"type": "object"}}
    if endpoint.response_example is not None:
        media["example"] = endpoint.response_example
    content = {"application/json": media}
    if endpoint.stream:
        content["text/event-stream"] = {"schema": SSE_EVENT_SCHEMA, "example": endpoint.sse_example}
    if endpoint.operation_id == "getMetrics":
        content["text/plain"] = {"schema": {"type": "string"}, "example": '# TYPE llm_server_requests_total counter\n'
                                 'llm_server_requests_total{endpoint="/v1/models",method="GET",status="200"} 3.0\n'}
    return content


def model_schema(model: type[BaseModel], schemas: dict[str, Any]) -> dict[str, str]:
    """Add `model` (and the models it uses) to `schemas` as pydantic writes them; return a `$ref` to it."""
    name = model.__name__
    if name not in schemas:
        schema = model.model_json_schema(ref_template=REF)
        for used, definition in {**schema.pop("$defs", {}), name: schema}.items():
            if schemas.setdefault(used, definition) != definition:  # two models of one name: one would be documented wrong
                raise ValueError(f"two request or response models are named {used}; rename one")
    return {"$ref": REF.format(model=name)}
