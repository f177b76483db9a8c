"""The chat page at /chat of the REAL server (subprocess, real default model, real scheduler), in
headless Chromium, plus a check that Gradio's own HTTP API cannot be used to skip the key.

The server is started once for this module with a known key and DEFAULT_API_KEY unset, so its
metrics count only what these tests do. The machine may be slow (a few tokens/s): every wait
polls for a condition with a generous deadline; the only time bounds asserted are the ones the
feature promises (the worker is free within seconds of Stop). Playwright serves the page's
events on the test's thread, so waits use `page.wait_for_timeout` while a page is open; a
request that must run while the page streams runs on another thread. Screenshots go to
tests/artifacts/chat_real_*.png. At the end the server's log must hold no traceback.
"""

from __future__ import annotations

import json
import threading
import time

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import API_KEY, start_server
from tests.helpers.chat_page import BOT, CUT_SHORT, last_answer_text, last_bot_text, set_max_tokens, shot
from tests.helpers.chat_page import wait_until as _wait_until
from tests.helpers.browser import launched_chromium, offline_context, require_chromium

USER = '#chatbot [data-testid="user"]'
LONG_STORY = (
    "Write a very long story, at least ten paragraphs, about a dragon who learns to bake bread "
    "in a small mountain village. Describe every character in detail."
)
SLOW = 240.0  # seconds: an upper bound for anything the real model does here, even on a loaded machine


# ---- the server, its metrics -------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server of its own: known key, no pre-filled key, a long queue timeout (slow machine)."""
    running = start_server(tmp_path_factory.mktemp("chat_real"), DEFAULT_API_KEY="", QUEUE_TIMEOUT_S="600")
    yield running
    running.stop()
    log = running.log()
    for bad in ("Traceback", "Task was destroyed but it is pending"):  # a clean run logs neither
        assert bad not in log, f"the server logged {bad!r}:\n{log[max(0, log.index(bad) - 2000):][:6000]}"


def metrics(server) -> dict:
    response = httpx.get(server.base_url + "/metrics", headers=server.headers(), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def generations(server) -> dict[tuple[str, str], int]:
    """Generation jobs run so far by (origin, outcome), summed over models (Prometheus text)."""
    response = httpx.get(server.base_url + "/metrics", params={"format": "prometheus"}, headers=server.headers(), timeout=30)
    assert response.status_code == 200, response.text
    counts: dict[tuple[str, str], int] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == "llm_server_generations_total":
                key = (sample.labels["origin"], sample.labels["outcome"])
                counts[key] = counts.get(key, 0) + int(sample.value)
    return counts


def by_origin(counts: dict[tuple[str, str], int], origin: str) -> int:
    return sum(n for (o, _), n in counts.items() if o == origin)


def generation_state(server) -> dict:
    """Everything that moves when anything is generated, or even queued."""
    snap = metrics(server)
    sched = snap["schedulers"]["generation"]
    return {
        "generations": generations(server),
        "completed": sched["completed"],
        "running": sched["running"],
        "queue_depth": sched["queue_depth"],
        "cancelled": sched["cancelled"],
        "rejected": sched["rejected"],
        "prompt_tokens": snap["tokens"]["prompt"],
        "completion_tokens": snap["tokens"]["completion"],
    }


def wait_idle(server, timeout: float = SLOW) -> None:
    """Until no generation runs or waits (a test must not start on the leftovers of another)."""
    deadline = time.monotonic() + timeout
    while True:
        sched = metrics(server)["schedulers"]["generation"]
        if sched["running"] == 0 and sched["queue_depth"] == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"the server stayed busy: {sched}")
        time.sleep(0.2)


# ---- the browser and the page --------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser(server):  # depends on the server so that it closes first
    require_chromium()  # a loud skip, or a failure under CI=true
    with launched_chromium() as browser:
        yield browser


@pytest.fixture
def page(server, browser):
    """A fresh page (new Gradio session) on /chat that may reach nothing but the server, with the
    key entered: the page lists the models only for a valid key."""
    wait_idle(server)
    with offline_context(browser, server.base_url) as (page, log):
        page.set_default_timeout(60_000)
        page.goto(server.base_url + "/chat", timeout=120_000)  # the server redirects to /chat/
        page.wait_for_selector("#prompt textarea", timeout=120_000)
        page.wait_for_selector("#api-key input", timeout=120_000)
        assert page.url == server.base_url + "/chat/"
        assert page.locator("#api-key input").input_value() == ""  # DEFAULT_API_KEY unset: nothing pre-filled
        page.fill("#api-key input", API_KEY)
        # (`?.`: on a slow machine the prompt can render before the model field exists)
        page.wait_for_function("(document.querySelector('#model input')?.value || '') !== ''", timeout=120_000)
        yield page
    assert log.outside == [], f"the page tried to reach outside the server: {log.outside}"
    assert [e for e in log.errors if "favicon" not in e and "404" not in e] == [], log.errors


def send(page, text: str, key: str | None = API_KEY) -> None:
    if key is not None:
        page.fill("#api-key input", key)
    page.fill("#prompt textarea", text)
    page.press("#prompt textarea", "Enter")




def wait_until(page, condition, timeout: float = SLOW, what: str = "condition") -> None:
    _wait_until(page, condition, timeout, what)


def generating(page) -> bool:
    """The page locks the prompt and Send while a reply is generated."""
    return page.locator("#send").is_disabled()








def wait_for_words(page, n: int, what: str) -> str:
    wait_until(page, lambda: len(last_bot_text(page).split()) >= n, what=what)
    return last_bot_text(page)


# ---- tests ---------------------------------------------------------------------------------------


@pytest.mark.browser
def test_chat_redirects_and_the_page_offers_the_real_models(server, page):
    response = httpx.get(server.base_url + "/chat", follow_redirects=False, timeout=30)
    assert response.status_code == 307 and response.headers["location"] == "/chat/"
    default_model = httpx.get(server.base_url + "/", timeout=30).json()["default_model"]
    listed = httpx.get(server.base_url + "/v1/models", headers=server.headers(), timeout=30).json()
    assert default_model in [m["id"] for m in listed["data"]]

    key = page.locator("#api-key input")
    assert key.get_attribute("type") == "password"  # (the fixture saw it empty, then typed the key)
    assert page.locator("#model input").input_value() == default_model
    page.locator("#model input").click()
    options = [o.split("\n")[-1].strip() for o in page.get_by_role("option").all_inner_texts()]  # "✓\nname"
    assert default_model in options
    assert "all-MiniLM-L6-v2" not in options  # chat models only, not the embedding model
    page.keyboard.press("Escape")
    shot(page, "empty")


@pytest.mark.browser
def test_reply_streams_from_the_real_model(server, page):
    before = generations(server)
    set_max_tokens(page, 160)
    send(page, "Tell me a short story about a cat who finds a hat.")
    first = wait_for_words(page, 2, "the first words of the reply")
    first_at = time.monotonic()
    # A later moment of the same reply: longer, while the page still generates.
    wait_until(page, lambda: len(last_bot_text(page)) > len(first) + 10 or not generating(page),
               what="the reply to grow")
    second = last_bot_text(page)
    was_generating = generating(page)
    grew_after = time.monotonic() - first_at
    shot(page, "streaming")
    assert len(second) > len(first) and second[:3] == first[:3], (first, second)  # the same reply, grown
    assert was_generating or len(second.split()) >= 20, "the reply did not stream"

    wait_until(page, lambda: not generating(page), what="the reply to end")
    final = last_answer_text(page)
    assert len(final) >= len(second) and final[:3] == first[:3]
    assert "⚠️" not in final and "Traceback" not in page.content()
    # One answer, followed by a notice only if it was cut at Max tokens.
    bots = page.locator(BOT).count()
    assert page.locator(USER).count() == 1 and bots in (1, 2)
    assert bots == 1 or last_bot_text(page).startswith(CUT_SHORT), last_bot_text(page)
    assert page.locator("#prompt textarea").is_enabled()
    shot(page, "reply")

    after = generations(server)
    assert by_origin(after, "ui") == by_origin(before, "ui") + 1, (before, after)  # one job, origin ui
    assert by_origin(after, "api") == by_origin(before, "api")
    print(f"\nfirst sample {first!r}; {grew_after:.1f}s later {second!r}; final {len(final.split())} words")


@pytest.mark.browser
def test_stop_ends_a_long_reply_and_frees_the_worker(server, page):
    before = generations(server)
    set_max_tokens(page, 512)
    send(page, LONG_STORY)
    wait_for_words(page, 5, "the story to start")
    assert generating(page)
    page.wait_for_timeout(300)
    shot(page, "long_story")

    clicked = time.monotonic()
    page.click("#stop")
    # The worker is free again within seconds: poll /metrics (with the key) right after the click.
    # (page.wait_for_timeout, not time.sleep: the page's cancel request goes through the offline
    # context's route handler, which Playwright runs on this thread.)
    freed_after = None
    while time.monotonic() - clicked < 10:
        if metrics(server)["schedulers"]["generation"]["running"] == 0:
            freed_after = time.monotonic() - clicked
            break
        page.wait_for_timeout(100)
    assert freed_after is not None, "the worker still ran 10 s after Stop"
    assert freed_after < 3.0, f"the worker ran {freed_after:.1f}s after Stop"

    # ... and the next job starts at once: a 1-token completion hardly waits in the queue.
    asked = time.monotonic()
    response = httpx.post(
        server.base_url + "/v1/completions", headers=server.headers(), timeout=SLOW,
        json={"prompt": "Hello", "max_tokens": 1},
    )
    assert response.status_code == 200, response.text
    queue_ms = float(response.headers["x-queue-time"])
    assert queue_ms < 1500, f"the next job waited {queue_ms:.0f} ms in the queue after Stop"

    # The page: generation has ended, the partial reply stays, the prompt is usable again.
    wait_until(page, lambda: not generating(page), timeout=30, what="the page to unlock after Stop")
    stopped = last_bot_text(page)
    page.wait_for_timeout(1500)
    assert last_bot_text(page) == stopped, "the reply still grows after Stop"
    assert len(stopped.split()) >= 5 and "⚠️" not in stopped
    assert page.locator("#prompt textarea").is_enabled()
    shot(page, "stopped")

    after = generations(server)
    assert after.get(("ui", "cancelled"), 0) == before.get(("ui", "cancelled"), 0) + 1, (before, after)
    assert by_origin(after, "ui") == by_origin(before, "ui") + 1, (before, after)
    assert by_origin(after, "api") == by_origin(before, "api") + 1, (before, after)
    print(f"\nworker free {freed_after:.2f}s after Stop; next job queued {queue_ms:.0f} ms, "
          f"answered {time.monotonic() - asked:.2f}s after it was sent; reply kept {len(stopped.split())} words")


@pytest.mark.browser
def test_a_reply_cut_at_max_tokens_ends_with_a_notice(server, page):
    set_max_tokens(page, 6)
    send(page, LONG_STORY)
    page.wait_for_selector(f"{BOT}:has-text('Cut short')", timeout=SLOW * 1000)
    wait_until(page, lambda: not generating(page), what="the page to unlock")
    texts = [t.strip() for t in page.locator(BOT).all_inner_texts()]
    assert len(texts) == 2 and texts[0] and not texts[0].startswith("⚠️"), texts
    assert texts[1] == "⚠️ Cut short: the reply reached Max tokens (6). Raise it and press Retry for a longer reply."
    shot(page, "chat_real_cut_short")


@pytest.mark.browser
def test_a_wrong_or_missing_key_shows_a_message_and_generates_nothing(server, page):
    before = generation_state(server)
    send(page, "hello", key="sk-wrong")
    page.wait_for_selector(f"{BOT}:has-text('Invalid API key')", timeout=60_000)
    text = last_bot_text(page)
    assert "Incorrect API key provided" in text and "Enter a valid key" in text
    assert "Traceback" not in page.content()
    wait_until(page, lambda: not generating(page), timeout=30, what="the page to unlock")
    shot(page, "wrong_key")

    send(page, "hello again", key="")
    page.wait_for_selector(f"{BOT}:has-text('Missing API key')", timeout=60_000)
    wait_until(page, lambda: not generating(page), timeout=30, what="the page to unlock")
    assert generation_state(server) == before, "something was generated or queued without a valid key"


@pytest.mark.browser
def test_health_and_the_api_work_while_a_ui_chat_streams(server, page):
    before = generations(server)
    set_max_tokens(page, 96)
    send(page, LONG_STORY)
    wait_for_words(page, 3, "the UI reply to start")
    assert generating(page)

    health = httpx.get(server.base_url + "/health", timeout=30)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text
    models = httpx.get(server.base_url + "/v1/models", headers=server.headers(), timeout=30)
    assert models.status_code == 200

    # A chat completion sent now waits behind the UI's job in the scheduler's FIFO, then runs.
    result: dict = {}

    def ask() -> None:
        try:
            body = {"messages": [{"role": "user", "content": "Name one color."}], "max_tokens": 8}
            result["response"] = httpx.post(
                server.base_url + "/v1/chat/completions", json=body, headers=server.headers(), timeout=SLOW + 60
            )
        except Exception as exc:  # noqa: BLE001 - reported by the main thread
            result["error"] = exc

    asker = threading.Thread(target=ask, daemon=True)
    asker.start()
    sent_with = last_bot_text(page)
    wait_until(page, lambda: len(last_bot_text(page)) > len(sent_with) or not generating(page),
               what="the UI reply to go on")
    assert len(last_bot_text(page)) > len(sent_with), "the UI reply did not grow while the API request waited"
    assert asker.is_alive() or "response" in result
    shot(page, "busy")

    wait_until(page, lambda: not generating(page), what="the UI reply to end")
    wait_until(page, lambda: not asker.is_alive(), what="the API request to complete")
    assert "error" not in result, result.get("error")
    response = result["response"]
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] >= 1
    assert "⚠️" not in last_answer_text(page)
    assert last_bot_text(page) == last_answer_text(page) or last_bot_text(page).startswith(CUT_SHORT)  # no error
    shot(page, "busy_done")

    after = generations(server)
    assert by_origin(after, "ui") == by_origin(before, "ui") + 1, (before, after)
    assert by_origin(after, "api") == by_origin(before, "api") + 1, (before, after)
    print(f"\nAPI job queued {response.headers.get('x-queue-time')} ms behind the UI job "
          f"({len(last_bot_text(page).split())} words)")


# ---- Gradio's own HTTP API (no browser) ----------------------------------------------------------


def sse_events(response: httpx.Response):
    """(event, data) pairs of an SSE stream; data parsed as JSON when it is JSON."""
    event = None
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            raw = line[5:].strip()
            try:
                data = json.loads(raw)
            except ValueError:
                data = raw
            yield event, data
            event = None


def respond_endpoint(client: httpx.Client) -> tuple[int, str]:
    """The fn_index and api_name of the chat function (`respond`) in the page's config."""
    config = client.get("/chat/config").json()
    for dep in config["dependencies"]:
        if (dep.get("api_name") or "").startswith("respond") and dep["types"]["generator"]:
            return dep["id"], dep["api_name"]
    raise AssertionError("no respond function in the page's config")


def respond_inputs(key: str | None, max_tokens: int = 4) -> list:
    chat = [{"role": "user", "content": [{"type": "text", "text": "Say hi"}]}]
    return [chat, key, None, "You are a helpful assistant.", 0.7, max_tokens]


def via_queue(client: httpx.Client, fn_index: int, data: list) -> str:
    """Ask through /queue/join + /queue/data (what the page does); the output as text."""
    session = f"bypass{time.monotonic_ns()}"
    joined = client.post("/chat/gradio_api/queue/join",
                         json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None})
    assert joined.status_code == 200, joined.text
    event_id = joined.json()["event_id"]
    with client.stream("GET", "/chat/gradio_api/queue/data", params={"session_hash": session}) as stream:
        for _, message in sse_events(stream):
            if isinstance(message, dict) and message.get("event_id") == event_id and message.get("msg") == "process_completed":
                return json.dumps(message, ensure_ascii=False)
    raise AssertionError("the queue stream ended without a result")


def assert_not_routed(client: httpx.Client, api_name: str, fn_index: int, data: list) -> None:
    """Gradio's REST API (/call, /run, /api) is not forwarded to Gradio at all: 404."""
    for path, body in (
        (f"/chat/gradio_api/call/{api_name}", {"data": data}),
        (f"/chat/gradio_api/run/{api_name}", {"data": data}),
        ("/chat/gradio_api/run/predict", {"data": data, "fn_index": fn_index}),
        (f"/chat/gradio_api/api/{api_name}", {"data": data}),
    ):
        response = client.post(path, json=body)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found", (path, response.text)


def test_gradio_http_api_cannot_generate_without_a_valid_key(server):
    wait_idle(server)
    with httpx.Client(base_url=server.base_url, timeout=SLOW) as client:
        fn_index, api_name = respond_endpoint(client)
        before = generation_state(server)
        for key in ("", None, "sk-wrong", f"Bearer {API_KEY}", API_KEY.upper()):
            output = via_queue(client, fn_index, respond_inputs(key))
            assert "Invalid API key" in output, (key, output)
            assert "Traceback" not in output
            assert_not_routed(client, api_name, fn_index, respond_inputs(key))
        assert_not_routed(client, api_name, fn_index, respond_inputs(API_KEY))
        time.sleep(1.0)  # anything wrongly started would show in the metrics by now
        assert generation_state(server) == before, "Gradio's API generated without a valid key"

        # The same call with the valid key does reach the model: the path above was a real one.
        output = via_queue(client, fn_index, respond_inputs(API_KEY, max_tokens=3))
        assert "Invalid API key" not in output and '"success": true' in output, output
        after = generations(server)
        assert by_origin(after, "ui") == by_origin(before["generations"], "ui") + 1, (before, after)
