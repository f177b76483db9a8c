"""The chat page at /chat in headless Chromium, served by Sanic through the ASGI bridge.

The backend is a fake that streams one word every 50 ms and records what it was asked, and
when it was stopped. The page may reach nothing but the server: any other request is aborted
and fails the test. Playwright serves those checks on the test's thread, so waits here use
`page.wait_for_timeout`, never `time.sleep`, while a page is open. Screenshots go to
tests/artifacts/.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from sanic import Sanic

from errors import QueueFull
from gradio_ui.asgi_bridge import Exchange
from gradio_ui.chat_app import mount_chat_ui
from tests.fakes_ui import FakeChatBackend
from tests.helpers.chat_page import BOT, last_bot_text, set_max_tokens, shot, wait_until
from tests.helpers.browser import launched_chromium, offline_context, require_chromium, serve_in_thread

require_chromium()
pytestmark = pytest.mark.browser

USER = '#chatbot [data-testid="user"]'


@pytest.fixture(scope="module")
def chat_server():
    """A real Sanic server on a free loopback port, on its own thread and loop, with the chat UI."""
    backend = FakeChatBackend()
    app = Sanic("chat_ui_browser_test")
    app.config.TOUCHUP = False  # touch-up rewrites shared classes once per process; a second app trips on it
    mount_chat_ui(app, backend)
    with serve_in_thread(app) as base_url:
        yield base_url, backend


@pytest.fixture(scope="module")
def browser(chat_server):  # depends on the server so that it closes first
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page(chat_server, browser):
    """A fresh page (new Gradio session) on /chat that may reach nothing but the server, with the
    key entered (the models are listed only then)."""
    base_url, _ = chat_server
    with offline_context(browser, base_url) as (page, log):
        started = time.monotonic()
        page.goto(base_url + "/chat")  # the bridge redirects to /chat/
        page.wait_for_selector("#prompt textarea", timeout=15_000)
        assert page.url == base_url + "/chat/"
        assert time.monotonic() - started < 10, "the page loads slowly: something waits on the network?"
        enter_key(page)
        yield page
    assert log.outside == [], f"the page tried to reach outside the server: {log.outside}"
    assert [e for e in log.errors if "favicon" not in e and "404" not in e] == [], log.errors


def enter_key(page, key: str = "sk-test") -> None:
    """Type the key; the model list fills in once the page has checked it."""
    page.fill("#api-key input", key)
    page.wait_for_function("(document.querySelector('#model input')?.value ?? '') !== ''", timeout=10_000)


def model_options(page) -> list[str]:
    page.locator("#model input").click()
    page.wait_for_timeout(300)
    options = [o.split("\n")[-1].strip() for o in page.get_by_role("option").all_inner_texts()]
    page.keyboard.press("Escape")
    return options


def send(page, text: str, key: str | None = "sk-test") -> None:
    if key is not None:
        page.fill("#api-key input", key)
    page.fill("#prompt textarea", text)
    page.press("#prompt textarea", "Enter")


def test_the_models_are_listed_only_for_a_valid_key(chat_server, browser):
    base_url, _ = chat_server
    with offline_context(browser, base_url) as (page, log):
        page.goto(base_url + "/chat/")
        page.wait_for_selector("#model input", timeout=15_000)
        key = page.locator("#api-key input")
        assert key.get_attribute("type") == "password"
        assert key.input_value() == ""  # DEFAULT_API_KEY unset: nothing pre-filled
        page.wait_for_timeout(1500)  # the page's load event has run by now
        assert page.locator("#model input").input_value() == "" and model_options(page) == []
        assert "fake-chat" not in page.content()
        page.fill("#api-key input", "sk-wrong")
        page.wait_for_timeout(1500)
        assert page.locator("#model input").input_value() == "" and model_options(page) == []
        enter_key(page)
        assert page.locator("#model input").input_value() == "fake-chat-1"
        assert model_options(page) == ["fake-chat-1", "fake-chat-2"]
        page.fill("#api-key input", "")  # the list goes with the key
        page.wait_for_function("document.querySelector('#model input').value === ''", timeout=10_000)
    assert log.outside == [], log.outside


def test_a_key_entered_while_the_page_loads_keeps_its_model_list(chat_server, browser, monkeypatch):
    """The page asks for the model list at load (for the key field's value, here none) and when the
    key changes. A key filled in at once (a password manager) must win even when the load's answer
    comes later: the two asks run in order."""
    base_url, backend = chat_server
    check_key = backend.check_key

    def slow_for_no_key(key: str) -> None:
        if not key:
            time.sleep(1.0)  # the load event's answer, for no key, is slow
        check_key(key)

    monkeypatch.setattr(backend, "check_key", slow_for_no_key)
    with offline_context(browser, base_url) as (page, log):
        page.goto(base_url + "/chat/")
        page.wait_for_selector("#api-key input", timeout=15_000)
        page.fill("#api-key input", "sk-test")
        page.wait_for_function("(document.querySelector('#model input')?.value ?? '') !== ''", timeout=10_000)
        page.wait_for_timeout(2000)  # the load event's answer has come by now
        assert page.locator("#model input").input_value() == "fake-chat-1"
    assert log.outside == [], log.outside


def test_page_offers_key_settings_and_defaults(page):
    key = page.locator("#api-key input")
    assert key.get_attribute("type") == "password"
    assert page.locator("#model input").input_value() == "fake-chat-1"
    assert page.locator("#system textarea").input_value() == "You are a helpful assistant."
    assert page.locator("#temperature input[type=number]").input_value() == "0.7"
    assert page.locator("#max-tokens input[type=number]").input_value() == "256"
    shot(page, "chat_empty")


def test_reply_streams_and_stop_ends_it_at_once(page, chat_server):
    _, backend = chat_server
    stops = len(backend.stopped_at)
    send(page, "Tell me a long story")
    wait_until(page, lambda: len(last_bot_text(page).split()) >= 3, what="the first words")
    first = last_bot_text(page)
    page.wait_for_timeout(600)
    second = last_bot_text(page)
    assert second.startswith(first) and len(second.split()) > len(first.split()) + 3, (first, second)
    assert page.locator("#send").is_disabled() and page.locator("#prompt textarea").is_disabled()
    shot(page, "chat_streaming")

    clicked = time.monotonic()
    page.click("#stop")
    wait_until(page, lambda: len(backend.stopped_at) > stops, timeout=3, what="the backend to see the stop")
    assert backend.stopped_at[-1] - clicked < 1.0, "the generation went on after Stop"
    assert backend.active == 0
    page.wait_for_timeout(300)
    after_stop = last_bot_text(page)
    page.wait_for_timeout(700)
    assert last_bot_text(page) == after_stop, "the reply still grows after Stop"
    assert 3 < len(after_stop.split()) < 100
    assert page.locator("#send").is_enabled() and page.locator("#prompt textarea").is_enabled()
    shot(page, "chat_stopped")

    # The partial answer stays in the conversation the model sees next.
    send(page, "Go on", key=None)
    wait_until(page, lambda: backend.requests[-1]["messages"][-1]["content"] == "Go on", what="the request")
    messages = backend.requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"].strip() == after_stop
    page.click("#stop")


def test_wrong_or_missing_key_shows_a_message_and_generates_nothing(page, chat_server):
    _, backend = chat_server
    asked = len(backend.requests)
    send(page, "hello", key="sk-wrong")
    page.wait_for_selector(f"{BOT}:has-text('Invalid API key')", timeout=15_000)
    assert "Incorrect API key provided" in last_bot_text(page)
    shot(page, "chat_wrong_key")
    send(page, "hello again", key="")
    page.wait_for_selector(f"{BOT}:has-text('Missing API key')", timeout=15_000)
    assert len(backend.requests) == asked, "something was generated without a valid key"

    # With the right key, Retry answers the last message; the notices never reach the model.
    page.fill("#api-key input", "sk-test")
    set_max_tokens(page, 3)
    page.click("#retry")
    wait_until(page, lambda: last_bot_text(page) == "word0 word1 word2", what="the retried answer")
    messages = backend.requests[-1]["messages"]
    assert [m["content"] for m in messages] == ["You are a helpful assistant.", "hello", "hello again"]


def test_no_answer_is_lost_when_the_event_stream_closes_late(page, chat_server, monkeypatch):
    """Gradio ends a session's event stream once nothing is pending. When that `close_stream`
    reaches the page after the next event's join answer (a loaded machine), the page must open a
    new stream for that event (gradio_ui/stream_reopen.py), or its answer never shows. Delaying
    every `close_stream` makes that order certain for each step of a turn."""
    real_send = Exchange.send

    async def late_close_stream(self, message: dict) -> None:
        if b'"msg":"close_stream"' in message.get("body", b""):
            await asyncio.sleep(0.5)
        await real_send(self, message)

    monkeypatch.setattr(Exchange, "send", late_close_stream)
    set_max_tokens(page, 3)
    send(page, "are you there?")  # three chained events: take the message, answer, unlock the box
    wait_until(page, lambda: last_bot_text(page) == "word0 word1 word2", what="the answer")
    wait_until(page, lambda: page.locator("#prompt textarea").is_enabled(), what="the unlocked message box")
    page.fill("#api-key input", "")  # the model list goes with the key, through one more event
    page.wait_for_function("document.querySelector('#model input').value === ''", timeout=10_000)


def test_settings_retry_and_clear(page, chat_server):
    _, backend = chat_server
    page.locator("#model input").click()
    page.get_by_role("option", name="fake-chat-2").click()
    page.fill("#system textarea", "Answer briefly.")
    set_max_tokens(page, 4)
    send(page, "first question")
    wait_until(page, lambda: last_bot_text(page) == "word0 word1 word2 word3", what="the short answer")
    asked = backend.requests[-1]
    assert (asked["model"], asked["max_tokens"], asked["temperature"]) == ("fake-chat-2", 4, 0.7)
    assert asked["messages"] == [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": "first question"},
    ]

    count = len(backend.requests)
    page.click("#retry")
    wait_until(page, lambda: len(backend.requests) == count + 1, what="the retry request")
    assert backend.requests[-1]["messages"] == asked["messages"]  # the old answer was dropped
    wait_until(page, lambda: last_bot_text(page) == "word0 word1 word2 word3", what="the retried answer")
    assert page.locator(BOT).count() == 1 and page.locator(USER).count() == 1
    shot(page, "chat_retried")

    page.click("#clear")
    wait_until(page, lambda: page.locator(BOT).count() == 0 and page.locator(USER).count() == 0, what="Clear")
    send(page, "fresh start", key=None)
    wait_until(page, lambda: backend.requests[-1]["messages"][-1]["content"] == "fresh start", what="the request")
    assert len(backend.requests[-1]["messages"]) == 2  # system + the new message only


def test_server_errors_are_readable_chat_messages(page, chat_server):
    _, backend = chat_server
    backend.fail_with = QueueFull("The generation queue is full (32 waiting); retry in a moment.")
    send(page, "are you busy?")
    page.wait_for_selector(f"{BOT}:has-text('Queue full')", timeout=15_000)
    text = last_bot_text(page)
    assert text == "⚠️ Queue full: The generation queue is full (32 waiting); retry in a moment."
    assert "Traceback" not in page.content()
    shot(page, "chat_queue_full")


def test_a_reply_cut_at_max_tokens_says_so_and_the_notice_never_reaches_the_model(page, chat_server):
    _, backend = chat_server
    backend.report_cut_short = True
    try:
        set_max_tokens(page, 3)
        send(page, "tell me a lot")
        page.wait_for_selector(f"{BOT}:has-text('Cut short')", timeout=15_000)
        texts = [t.strip() for t in page.locator(BOT).all_inner_texts()]
        assert texts == ["word0 word1 word2",
                         "⚠️ Cut short: the reply reached Max tokens (3). Raise it and press Retry for a longer reply."]
        shot(page, "chat_cut_short")
        send(page, "and more", key=None)
        wait_until(page, lambda: backend.requests[-1]["messages"][-1]["content"] == "and more", what="the next request")
        assert [m["content"].strip() for m in backend.requests[-1]["messages"]] == [
            "You are a helpful assistant.", "tell me a lot", "word0 word1 word2", "and more"]
    finally:
        backend.report_cut_short = False


def test_closing_the_page_stops_generation(page, chat_server):
    _, backend = chat_server
    stops = len(backend.stopped_at)
    send(page, "Tell me everything")
    wait_until(page, lambda: len(last_bot_text(page).split()) >= 3, what="the first words")
    closed = time.monotonic()
    page.close()
    deadline = closed + 3
    while len(backend.stopped_at) == stops and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(backend.stopped_at) > stops, "the generation went on after the page was closed"
    assert backend.stopped_at[-1] - closed < 1.5
    assert backend.active == 0
