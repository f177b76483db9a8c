"""The /status dashboard in headless Chromium, against the real server (and, for the pre-filled
key, the app on fake engines in this process). The page may reach nothing but the server.
Screenshots go to tests/artifacts/."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from models.fake_chat import FakeChatEngine
from models.fake_embedding import FakeEmbeddingEngine
from server import create_app
from settings import Settings
from tests.helpers.fake_server import write_fake_gguf
from tests.conftest import API_KEY
from tests.helpers.browser import ARTIFACTS, launched_chromium, offline_context, require_chromium, serve_in_thread

require_chromium()
pytestmark = pytest.mark.browser

PREFILLED_KEY = 'sk-pre"filled<&>'


@pytest.fixture(scope="module")
def browser(live_server):  # depends on the server so that it closes first
    with launched_chromium() as browser:
        yield browser


def field(page, name: str) -> str:
    return page.locator(f'[data-field="{name}"]').inner_text()


def wait_for_change(page, name: str, old: str, timeout_s: float = 90) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (now := field(page, name)) != old:
            return now
        page.wait_for_timeout(250)
    raise AssertionError(f"{name} stayed {old!r} for {timeout_s}s")


def test_dashboard_goes_live_with_the_key_and_numbers_follow_requests(browser, live_server):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with offline_context(browser, live_server.base_url) as (page, log):
        response = page.goto(live_server.base_url + "/status?interval=1")
        headers = response.headers
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert "script-src 'self'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff" and headers["x-frame-options"] == "DENY"
        assert page.input_value("#key") == ""  # DEFAULT_API_KEY is not set on this server
        assert "Enter an API key" in page.inner_text("#message")

        page.fill("#key", API_KEY)
        page.click("button[type=submit]")
        page.wait_for_selector("#message.ok", timeout=15_000)
        assert field(page, "model").endswith(".gguf") and field(page, "model_state") == "ready"
        requests_before, tokens_before = field(page, "requests"), field(page, "tokens")

        def ask() -> None:
            body = {"messages": [{"role": "user", "content": "List 3 colors."}], "max_tokens": 6}
            httpx.post(live_server.base_url + "/v1/chat/completions", json=body, headers=live_server.headers(), timeout=120)

        asker = threading.Thread(target=ask)
        asker.start()
        assert int(wait_for_change(page, "requests", requests_before).replace(",", "")) > int(requests_before.replace(",", ""))
        tokens_after = wait_for_change(page, "tokens", tokens_before)
        assert int(tokens_after.replace(",", "")) > int(tokens_before.replace(",", ""))
        asker.join(120)
        page.wait_for_timeout(2500)  # a few more polls, so the charts have lines
        assert page.locator("#endpoints tbody tr", has_text="POST /v1/chat/completions").count() == 1
        assert page.locator("#models tbody tr").count() >= 1
        assert page.locator("#chart-tokens polyline.s0").get_attribute("points").count(",") >= 3
        page.screenshot(path=str(ARTIFACTS / "status_page.png"), full_page=True)
        # The key lives as long as the tab (sessionStorage), not on disk for every later visitor.
        assert page.evaluate("sessionStorage.getItem('llm-server-api-key')") == API_KEY
        assert page.evaluate("localStorage.length") == 0

        page.reload()  # the key is kept in the tab: live again without typing
        page.wait_for_selector("#message.ok", timeout=15_000)
        assert log.outside == [] and log.errors == []


def test_wrong_key_shows_a_clear_message(browser, live_server):
    with offline_context(browser, live_server.base_url) as (page, log):
        page.goto(live_server.base_url + "/status?interval=1")
        page.fill("#key", "sk-wrong-key")
        page.click("button[type=submit]")
        message = page.wait_for_selector("#message.error", timeout=15_000)
        assert "Wrong API key" in message.inner_text() and "401" in message.inner_text()
        assert field(page, "requests") == "–"  # no stale or made-up numbers
        page.screenshot(path=str(ARTIFACTS / "status_wrong_key.png"))
        assert log.outside == []
        # The browser itself logs the refused fetch; nothing else may fail.
        assert all("401" in error for error in log.errors), log.errors


@pytest.fixture(scope="module")
def prefilled_app_url(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prefilled")
    write_fake_gguf(folder / "models")
    settings = Settings(api_keys=[API_KEY, PREFILLED_KEY], default_api_key=PREFILLED_KEY, models_dir=folder / "models",
                        training_data_dir=folder / "training")
    app = create_app(settings, chat_engine_factory=lambda _model: FakeChatEngine(), embedding_engine_factory=FakeEmbeddingEngine,
                     name="status_prefill_test", mount_ui=False)
    app.config.TOUCHUP = False
    with serve_in_thread(app) as url:
        yield url


def test_default_api_key_prefills_the_field(browser, prefilled_app_url):
    with offline_context(browser, prefilled_app_url) as (page, log):
        page.goto(prefilled_app_url + "/status?interval=1")
        assert page.input_value("#key") == PREFILLED_KEY  # escaped into the page, read back intact
        page.wait_for_selector("#message.ok", timeout=15_000)
        assert field(page, "model") == "fake-chat.gguf"
        assert log.outside == [] and log.errors == []
