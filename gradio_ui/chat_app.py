"""The chat page at `/chat`: a Gradio Blocks app that talks only to a `ChatBackend`.

The conversation lives in the page: the chatbot's own value is the history, so the model is
asked exactly what the user sees (after Stop too). A message the UI itself adds (a wrong key, a
full queue, a reply cut short at Max tokens...) starts with `NOTICE`; it is shown but never sent
to the model.

Stopping: Stop and Clear cancel the running Gradio event. Gradio cancels the task that drives
`respond`, or closes it between two tokens; either way the `aclosing` block closes the
backend's stream, and the backend stops the generation.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

# Gradio reads these at import and call time: no telemetry, nothing fetched at run time.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "GRADIO_TEMP_DIR" not in os.environ:  # the server sets it from its settings (gradio_ui.use_temp_dir)
    from gradio_ui import DEFAULT_TEMP_DIR, use_temp_dir

    use_temp_dir(DEFAULT_TEMP_DIR)

from contextlib import aclosing  # noqa: E402

import gradio as gr  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from sanic import Sanic  # noqa: E402

from errors import (  # noqa: E402
    AuthenticationFailed,
    ContextLengthExceeded,
    InvalidRequest,
    ModelLoadFailed,
    ModelNotFound,
    QueueFull,
    ServerError,
    Unavailable,
)
from api.http import page_headers  # noqa: E402
from gradio_ui.asgi_bridge import mount_asgi  # noqa: E402
from gradio_ui.backend import ChatBackend, CutShort  # noqa: E402
from gradio_ui.stream_reopen import serve_stream_reopen_fix  # noqa: E402

log = logging.getLogger(__name__)

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."
DEFAULT_TEMPERATURE = 0.7
DEFAULT_MAX_TOKENS = 256
MAX_TOKENS_LIMIT = 2048
NOTICE = "⚠️ "

# First match wins, so subclasses come before their parents.
ERROR_TITLES: tuple[tuple[type[ServerError], str], ...] = (
    (AuthenticationFailed, "Invalid API key"),
    (QueueFull, "Queue full"),
    (ContextLengthExceeded, "Context too long"),
    (ModelLoadFailed, "Model failed to load"),
    (ModelNotFound, "Unknown model"),
    (Unavailable, "Server unavailable"),
    (InvalidRequest, "Invalid request"),
    (ServerError, "Error"),
)


def notice(exc: Exception) -> dict:
    """A readable chat message for an error; never a stack trace."""
    if isinstance(exc, ServerError):
        title = next(title for cls, title in ERROR_TITLES if isinstance(exc, cls))
        text = f"{NOTICE}{title}: {exc.message}"
        if isinstance(exc, AuthenticationFailed):
            text += " Enter a valid key in the API key field, then press Retry."
    else:
        text = f"{NOTICE}Internal error: the server could not answer. The details are in the server log."
    return {"role": "assistant", "content": text}


def cut_short_notice(cut: CutShort) -> dict:
    """Says why a reply stopped mid-way; like every notice, it is never sent to the model."""
    if cut.limit == "max_tokens":
        why = f"the reply reached Max tokens ({cut.max_tokens}). Raise it and press Retry for a longer reply."
    elif cut.limit == "context":
        why = "the conversation filled the model's context window. Press Clear to start a new one."
    else:
        why = "the reply reached the server's time limit for one generation."
    return {"role": "assistant", "content": f"{NOTICE}Cut short: {why}"}


def plain(chat: list[dict] | None) -> list[dict]:
    """The chatbot's value as `{"role", "content": str}` dicts (Gradio hands content as parts; a
    message without content, as an OpenAI-style tool-call message has, is empty text)."""
    def text(content: Any) -> str:
        if isinstance(content, str):
            return content
        return "".join(part.get("text", "") for part in content or () if isinstance(part, dict))

    return [{"role": m.get("role", "user"), "content": text(m.get("content"))} for m in chat or []]


def model_messages(system: str, chat: list[dict]) -> list[dict]:
    """What the model is asked: the system prompt and the conversation, without notices."""
    messages = [{"role": "system", "content": system.strip()}] if system.strip() else []
    return messages + [m for m in chat if not (m["role"] == "assistant" and m["content"].startswith(NOTICE))]


def locked(**prompt_update: Any) -> tuple:
    """Updates of (prompt, send, retry): no new turn starts while one is generating."""
    off = gr.update(interactive=False)
    return gr.update(interactive=False, **prompt_update), off, off


def unlocked() -> tuple:
    return gr.update(interactive=True), gr.update(interactive=True), gr.update(interactive=True)


def add_user_message(text: str, chat: list[dict]):
    chat = plain(chat)
    if text.strip():
        chat.append({"role": "user", "content": text.strip()})
    return *locked(value=""), chat


def drop_last_answer(chat: list[dict]):
    chat = plain(chat)
    while chat and chat[-1]["role"] != "user":
        chat.pop()
    return *locked(), chat


def clear_chat():
    return *unlocked(), []


def make_responder(backend: ChatBackend):
    async def respond(chat, api_key, model, system, temperature, max_tokens):
        """Stream the answer to the last user message into the chat."""
        chat = plain(chat)
        if not chat or chat[-1]["role"] != "user":
            yield chat  # nothing to answer
            return
        text, key, cut = "", (api_key or "").strip(), None
        try:
            backend.check_key(key)
            stream = backend.stream_chat(
                api_key=key,
                model=model or backend.default_model(),  # sent before the page's models loaded
                messages=model_messages(system or "", chat),
                temperature=float(temperature),
                max_tokens=int(max_tokens),
            )
            async with aclosing(stream) as deltas:
                async for delta in deltas:
                    if isinstance(delta, CutShort):
                        cut = delta
                        continue
                    text += delta
                    yield chat + [{"role": "assistant", "content": text}]
            yield chat + [{"role": "assistant", "content": text}] + ([cut_short_notice(cut)] if cut else [])
        except Exception as exc:  # noqa: BLE001 - every failure becomes a readable message
            if not isinstance(exc, ServerError):
                log.exception("chat UI generation failed")
            elif exc.detail:  # e.g. what the engine raised: for the log only, the notice has the stable message
                log.error("chat UI generation failed: %s", exc.detail, exc_info=exc.__cause__)
            answer = [{"role": "assistant", "content": text}] if text else []
            yield chat + answer + [notice(exc)]

    return respond


def build_chat_ui(backend: ChatBackend, *, default_api_key: str = "") -> gr.Blocks:
    """The chat page; it calls nothing but `backend`, and only once the server runs."""

    def model_choices(key: str, current: str | None = None):
        """The model list, for a valid key only (`/v1/models` asks the key too); asked at page load
        (a pre-filled DEFAULT_API_KEY) and when the key changes, so the backend is set up by then."""
        try:
            backend.check_key((key or "").strip())
        except AuthenticationFailed:
            return gr.update(choices=[], value=None)
        models, default = backend.chat_models(), backend.default_model()
        value = current if current in models else default if default in models else None
        return gr.update(choices=models, value=value)

    with gr.Blocks(title="Local LLM chat", analytics_enabled=False) as ui:
        with gr.Row():
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(
                    label="Chat", height=480, elem_id="chatbot", feedback_options=None,
                    buttons=["copy", "copy_all"],  # no "share": it would upload to a hub
                )
                with gr.Row():
                    prompt = gr.Textbox(
                        show_label=False, placeholder="Type a message and press Enter",
                        lines=1, max_lines=8, scale=5, autofocus=True, elem_id="prompt",
                    )
                    send = gr.Button("Send", variant="primary", scale=1, elem_id="send")
                with gr.Row():
                    stop = gr.Button("Stop", variant="stop", elem_id="stop")
                    retry = gr.Button("Retry", elem_id="retry")
                    clear = gr.Button("Clear", elem_id="clear")
            with gr.Column(scale=1):
                api_key = gr.Textbox(
                    label="API key", type="password", value=default_api_key,
                    placeholder="Bearer key of this server", elem_id="api-key",
                )
                model = gr.Dropdown([], label="Model", elem_id="model", interactive=True)
                system = gr.Textbox(
                    label="System prompt", value=DEFAULT_SYSTEM_PROMPT, lines=3, elem_id="system",
                )
                temperature = gr.Slider(
                    0, 2, value=DEFAULT_TEMPERATURE, step=0.05, label="Temperature", elem_id="temperature",
                )
                max_tokens = gr.Slider(
                    1, MAX_TOKENS_LIMIT, value=DEFAULT_MAX_TOKENS, step=1, label="Max tokens",
                    elem_id="max-tokens",
                )

        lockable = [prompt, send, retry]
        respond = make_responder(backend)
        respond_inputs = [chatbot, api_key, model, system, temperature, max_tokens]
        # The page's own events, not a public Gradio API. All go through Gradio's queue, the one
        # event route the bridge lets through (queue=False events would need /gradio_api/run/...).
        private = {"api_visibility": "private"}
        quick = {**private, "concurrency_limit": None, "show_progress": "hidden"}
        generations = []
        for trigger, step, inputs in (
            (prompt.submit, add_user_message, [prompt, chatbot]),
            (send.click, add_user_message, [prompt, chatbot]),
            (retry.click, drop_last_answer, [chatbot]),
        ):
            turn = trigger(step, inputs, [*lockable, chatbot], **quick)
            # No Gradio-side concurrency limit: the generation scheduler is the one queue, and it
            # is fair between UI users and API clients.
            generation = turn.then(respond, respond_inputs, chatbot, concurrency_limit=None, **private)
            generation.then(unlocked, None, lockable, **quick)
            generations.append(generation)
        stop.click(unlocked, None, lockable, cancels=generations, **quick)
        for trigger in (clear.click, chatbot.clear):  # the chatbot's own trash icon clears too
            trigger(clear_chat, None, [*lockable, chatbot], cancels=generations, **quick)
        # One at a time, in the order asked, so the list is the last key's: a key typed or filled in
        # right after the page opened must not be undone by the load event's answer for no key.
        listing = {**quick, "concurrency_limit": 1, "concurrency_id": "model_list"}
        ui.load(model_choices, [api_key, model], model, **listing)
        api_key.change(model_choices, [api_key, model], model, trigger_mode="always_last", **listing)
    return ui


# The only requests of Gradio's app that the bridge forwards (method, path below /chat); any other
# answers 404. They are what the page asks while it loads, chats, and is stopped, retried and cleared
# (recorded in headless Chromium): no uploads, no `file=`/`proxy=` fetches, no /call, /run or /info.
PAGE_ROUTES = (
    ("GET", r"/"),  # the page; its config is inlined
    ("GET", r"/config"),  # the same config as JSON, for scripts (not asked by the page)
    ("GET", r"/theme\.css"),
    ("GET", r"/assets/[\w.-]+"),  # JS and CSS bundles (a flat folder)
    ("GET", r"/static/[\w.-]+(?:/[\w.-]+)*"),  # fonts, iframeResizer
    ("POST", r"/gradio_api/queue/join"),  # every event of the page
    ("GET", r"/gradio_api/queue/data"),  # their results (SSE)
    ("POST", r"/gradio_api/cancel"),  # Stop, Clear
    ("POST", r"/gradio_api/reset"),  # Stop (a no-op in Gradio 6, but the page asks it)
)

# Added to every /chat response that lacks them. No full CSP: Gradio's page needs inline scripts and styles.
SECURITY_HEADERS = page_headers("frame-ancestors 'none'", referrer="same-origin")


def mount_chat_ui(
    app: Sanic, backend: ChatBackend, *, path: str = "/chat", default_api_key: str = ""
) -> None:
    """Serve the chat page at `path` of `app`, through the in-process ASGI bridge."""
    blocks = build_chat_ui(backend, default_api_key=default_api_key)
    asgi_app = gr.mount_gradio_app(
        FastAPI(docs_url=None, redoc_url=None, openapi_url=None),
        blocks,
        path=path,
        footer_links=[],
        run_history=False,
        ssr_mode=False,
        max_file_size=0,  # the page uploads nothing (and the bridge forwards no upload route)
    )
    # Gradio's queue polls every 1 ms when idle (~900 event-loop wake-ups a second, ~5% of a core
    # taken from generation); 20 ms still starts a UI event well within a human's notice.
    blocks._queue.sleep_when_free = 0.02
    blocks._queue.progress_update_sleep_when_free = 0.1
    mount_asgi(app, path, asgi_app, headers=SECURITY_HEADERS, allow=PAGE_ROUTES)
    serve_stream_reopen_fix(app, path, SECURITY_HEADERS)

    async def stop_gradio_queue(_app: Sanic) -> None:
        blocks.close(verbose=False)  # ends the queue's loops; the ASGI lifespan leaves them running
        # They see it at their next poll (the intervals set above): let them end while the loop
        # still runs, or Sanic closes the loop on them ("Task was destroyed but it is pending!").
        queue = blocks._queue
        await asyncio.sleep(2 * max(queue.sleep_when_free, queue.progress_update_sleep_when_free))

    app.register_listener(stop_gradio_queue, "before_server_stop")
