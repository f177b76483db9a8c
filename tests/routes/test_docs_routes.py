"""/openapi.json in-process: the catalogue's models, the auth rule and the error classes are what it says."""

from __future__ import annotations

import pytest

import errors
from api import auth
from api.docs import REF
from api.protocol import ChatCompletionRequest
from api.system import VERSION

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_the_spec_names_the_models_the_key_rule_and_the_error_classes(served):
    spec = (await served.client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert {"ChatCompletionRequest", "ChatCompletion", "CompletionRequest", "EmbeddingRequest", "IngestRequest",
            "DatasetPage", "ErrorResponse"} <= set(schemas)
    chat = spec["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            protected = auth.is_protected(path)
            assert ("security" in operation) == protected, (method, path)
            assert ("401" in operation["responses"]) == protected, (method, path)
            for status, response in operation["responses"].items():
                example = response.get("content", {}).get("application/json", {}).get("example", {})
                if isinstance(example, dict) and "error" in example and status != "200":
                    error = next(c for c in vars(errors).values()
                                 if isinstance(c, type) and issubclass(c, errors.ServerError) and c.code == example["error"]["code"])
                    assert (error.status, error.type) == (int(status), example["error"]["type"]), (method, path, status)


async def test_the_spec_is_openapi_31_with_pydantics_own_schemas(served):
    spec = (await served.client.get("/openapi.json")).json()
    assert spec["openapi"] == "3.1.0" and spec["info"]["version"] == VERSION
    schemas = spec["components"]["schemas"]
    written = ChatCompletionRequest.model_json_schema(ref_template=REF)
    defs = written.pop("$defs")
    assert schemas["ChatCompletionRequest"] == written  # no rewriting: JSON Schema 2020-12 is 3.1's dialect
    assert all(schemas[name] == schema for name, schema in defs.items())
    read = spec["paths"]["/v1/training/datasets/{name}"]["get"]
    assert [(p["name"], p["in"], p["required"]) for p in read["parameters"]] == [
        ("offset", "query", False), ("limit", "query", False), ("name", "path", True)]
    documented = {path for path in spec["paths"]}
    assert not any(path.startswith(("/docs", "/redoc", "/status/assets", "/chat", "/openapi")) for path in documented)


@pytest.mark.parametrize("path", ["/status/assets/status.js", "/status/assets/status.css", "/docs/assets/swagger-init.js",
                                  "/docs/assets/swagger-ui/swagger-ui-bundle.js", "/docs/assets/swagger-ui/swagger-ui.css",
                                  "/docs/assets/swagger-ui/favicon-32x32.png", "/docs/assets/redoc/logo-mini.svg"])
async def test_page_assets_are_static_files_revalidated_on_each_load(served, path):
    response = await served.client.get(path)
    assert response.status_code == 200 and response.content
    assert response.headers["x-content-type-options"] == "nosniff" and response.headers["cache-control"] == "no-cache"
    assert response.headers["content-type"].split(";")[0] in {"text/javascript", "text/css", "image/png", "image/svg+xml"}
    again = await served.client.get(path, headers={"If-Modified-Since": response.headers["last-modified"]})
    assert again.status_code == 304 and again.content == b""


async def test_redoc_reads_its_logo_from_this_server(served):
    response = await served.client.get("/docs/assets/redoc/redoc.standalone.js")
    assert response.status_code == 200 and response.headers["x-content-type-options"] == "nosniff"
    assert b"cdn.redoc.ly" not in response.content and b"/docs/assets/redoc/logo-mini.svg" in response.content


@pytest.mark.parametrize("path", ["/status/assets/status.html", "/status/assets/../status.html", "/docs/assets/redoc/x.js",
                                  "/docs/assets/swagger-ui/index.html", "/status/assets/"])
async def test_no_other_file_is_served_under_the_asset_paths(served, path):
    response = await served.client.get(path)
    assert response.status_code == 404
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
