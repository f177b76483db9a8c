"""A one-statement fix to Gradio's page client, served in place of its bundle.

Gradio's page receives the results of all its events over one SSE stream per session
(`/gradio_api/queue/data`). The server ends that stream (`close_stream`) as soon as no event of
the session is pending, and the page opens a new one when it joins an event while none is open.
The two race. When event B is joined just as the server ends the stream after event A, the page
can read B's join answer before the `close_stream` the server sent earlier. The stream still
looks open, so the page opens none, and then closes it. B's results wait on the server until
some later event opens a stream. In the chat this is a message that never gets its answer, or a
model list that never fills in. It showed on a loaded 2-core machine, and it is certain when
`close_stream` arrives late (tests/browser/test_chat_ui.py delays it).

The fix: on `close_stream`, if an event the page joined has not completed, open a new stream at
once. The results wait in the server's queue for the session, so nothing is lost. The bundle is
minified, so the statement is found by its shape; a Gradio whose bundle lacks that shape is
served unpatched, with a warning (tests/unit/test_stream_reopen.py fails on it first).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import gradio as gr
from sanic import Request, Sanic
from sanic.response import HTTPResponse, raw

from api.http import ASSET_TYPES, STATIC_HEADERS

log = logging.getLogger(__name__)

ASSETS = Path(gr.__file__).parent / "templates" / "frontend" / "assets"
# Gradio 6.31: if(s.msg===`close_stream`){wt(r,o.abort_controller);return}, where `o` is the client
CLOSE_HANDLER = re.compile(r"if\(\w+\.msg===`close_stream`\)\{\w+\(\w+,(?P<client>\w+)\.abort_controller\);return\}")
# The same function names the client's set of joined, not yet completed events: unclosed_events:t
UNCLOSED = re.compile(r"unclosed_events:(\w+)")
SEARCH_BACK = 2000  # characters before the handler where that name is looked up


def patched(source: str) -> str | None:
    """`source` with the fix, or None when it does not hold exactly one close handler to fix."""
    handlers = list(CLOSE_HANDLER.finditer(source))
    if len(handlers) != 1:
        return None
    handler = handlers[0]
    names = UNCLOSED.findall(source, max(0, handler.start() - SEARCH_BACK), handler.start())
    if not names:
        return None
    at = handler.end() - len("return}")
    return f"{source[:at]}{names[-1]}.size&&{handler['client']}.open_stream();{source[at:]}"


def patched_bundle(assets: Path = ASSETS) -> tuple[str, bytes] | None:
    """(file name, patched text) of the bundle holding the client, or None if none can be fixed."""
    for bundle in sorted(assets.glob("index-*.js")):
        fixed = patched(bundle.read_text(encoding="utf-8"))
        if fixed is not None:
            return bundle.name, fixed.encode("utf-8")
    return None


def serve_stream_reopen_fix(app: Sanic, path: str, headers: dict[str, str]) -> None:
    """Route `path/assets/<bundle>` to the patched bundle; Sanic matches it before the bridge's
    `path/<path>`, which serves every other asset."""
    found = patched_bundle()
    if found is None:
        log.warning("Gradio's page client was not patched (its bundle changed): a chat event may "
                    "wait for the next one when the event stream closes early")
        return
    name, body = found
    headers = {**headers, **STATIC_HEADERS}

    async def patched_client_bundle(_request: Request) -> HTTPResponse:
        return raw(body, content_type=ASSET_TYPES[".js"], headers=headers)

    app.add_route(
        patched_client_bundle, f"{path.rstrip('/')}/assets/{name}",
        methods=["GET", "HEAD"], name="chat_patched_client_bundle",
    )
