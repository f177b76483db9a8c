"""/openapi.json in-process: the catalogue's models, the auth rule and the error classes are what it says."""

from __future__ import annotations

import pytest

import errors
from api import auth

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
