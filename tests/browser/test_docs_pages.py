"""Swagger UI (/docs) and ReDoc (/redoc) in headless Chromium: both render the server's endpoints from
/openapi.json with nothing loaded from outside the server. Screenshots go to tests/artifacts/."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers.browser import ARTIFACTS, launched_chromium, offline_context, require_chromium

require_chromium()
pytestmark = pytest.mark.browser

DOCUMENTED = {
    ("get", "/"), ("get", "/health"), ("get", "/v1/models"), ("post", "/v1/chat/completions"), ("post", "/v1/completions"),
    ("post", "/v1/embeddings"), ("post", "/v1/training/ingest"), ("get", "/v1/training/datasets"), ("get", "/metrics"),
    ("get", "/status"),
}


@pytest.fixture(scope="module")
def browser(live_server):
    with launched_chromium() as browser:
        yield browser


def test_openapi_document_describes_every_endpoint(live_server):
    spec = httpx.get(live_server.base_url + "/openapi.json").json()
    operations = {(method, path): op for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert DOCUMENTED <= set(operations)
    assert not any(path.startswith(("/docs", "/redoc", "/status/assets")) for _, path in operations)
    assert spec["components"]["securitySchemes"]["bearerAuth"]["scheme"].lower() == "bearer"
    chat = operations[("post", "/v1/chat/completions")]
    assert chat["security"] == [{"bearerAuth": []}]
    body = chat["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ChatCompletionRequest"}
    assert body["examples"]["chat"]["value"]["messages"][1]["content"] == "Say hello in one short sentence."  # README's
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert chat["responses"]["429"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorResponse"}
    assert chat["responses"]["401"]["content"]["application/json"]["example"]["error"]["code"] == "invalid_api_key"
    assert "security" not in operations[("get", "/health")]
    schemas = spec["components"]["schemas"]
    assert {"ChatCompletionRequest", "ChatCompletion", "CompletionRequest", "EmbeddingRequest", "EmbeddingList",
            "IngestRequest", "IngestResponse", "ErrorResponse", "ErrorDetail", "ModelList"} <= set(schemas)
    assert spec["openapi"] == "3.1.0"  # pydantic's JSON Schema 2020-12 is its dialect: nullable fields are anyOf null
    assert {"type": "null"} in schemas["ChatCompletionRequest"]["properties"]["max_tokens"]["anyOf"]


def test_swagger_ui_lists_the_endpoints_offline(browser, live_server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with offline_context(browser, live_server.base_url) as (page, log):
        response = page.goto(live_server.base_url + "/docs")
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = {(el.get_attribute("data-path") or el.inner_text()).strip() for el in page.query_selector_all(".opblock-summary-path")}
        assert {path for _, path in DOCUMENTED} <= paths
        assert page.locator("button.authorize").count() == 1  # the bearer security scheme
        page.click("#operations-OpenAI-createChatCompletion .opblock-summary")
        page.wait_for_selector("#operations-OpenAI-createChatCompletion .body-param__example", timeout=15_000)
        assert "Say hello in one short sentence." in page.inner_text("#operations-OpenAI-createChatCompletion")
        page.locator("#operations-OpenAI-createChatCompletion .opblock-section-request-body").scroll_into_view_if_needed()
        page.screenshot(path=str(ARTIFACTS / "docs_swagger.png"))
        assert log.outside == [] and log.errors == []


def test_redoc_lists_the_endpoints_offline(browser, live_server):
    with offline_context(browser, live_server.base_url) as (page, log):
        response = page.goto(live_server.base_url + "/redoc")
        assert response.headers["x-content-type-options"] == "nosniff"
        page.wait_for_selector("h2:has-text('Create a chat completion')", timeout=30_000)
        text = page.inner_text("body")
        for summary in ("List models", "Create embeddings", "Ingest training examples", "Metrics", "Health check"):
            assert summary in text
        assert "/v1/chat/completions" in text
        page.screenshot(path=str(ARTIFACTS / "docs_redoc.png"))
        assert log.outside == [] and log.errors == []
