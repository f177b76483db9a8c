"""Serve an ASGI application under a path prefix of a Sanic app, on Sanic's own server and loop.

It lets the Gradio UI live at `/chat` while Sanic keeps its native server, which cancels a
handler when its client disconnects (the generation scheduler relies on that). `mount_asgi`:

- routes `prefix` (a redirect to `prefix/`, as a page with relative links needs), `prefix/` and
  `prefix/<path>`, for every method, to the ASGI app; the app sees the full path (root_path "");
- with `allow`, forwards only the (method, path pattern) pairs it lists and answers 404 (Sanic's
  `NotFound`, so the app's usual 404) for any other; HEAD counts as GET;
- hands the app the request body in one `http.request` message, and `http.disconnect` once the
  client has gone (Sanic cancels the handler) or the response is complete;
- streams a response chunk by chunk, so SSE flows at once; a response complete in its first body
  message is sent whole; HEAD is asked of the app as GET and its answer buffered (sanic 25.12
  raises on a streamed response to HEAD), and Sanic sends only the headers;
- drives the app's lifespan: startup in `after_server_start` (after every startup listener, on
  the running loop), shutdown in `before_server_stop`.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Awaitable, Callable, Iterable
from urllib.parse import unquote

from sanic import Request, Sanic
from sanic.compat import Header
from sanic.exceptions import NotFound
from sanic.response import HTTPResponse, redirect

ASGIApp = Callable[[dict, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]
# (method, regular expression that the whole path below the prefix must match), e.g. ("GET", r"/assets/[\w.-]+")
AllowedRoute = tuple[str, str]

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
DISCONNECT_GRACE_S = 1.0  # time the app gets to end by itself after `http.disconnect`
HOP_BY_HOP = {b"connection", b"keep-alive", b"transfer-encoding"}

log = logging.getLogger(__name__)


def mount_asgi(
    app: Sanic, prefix: str, asgi_app: ASGIApp, *, headers: dict[str, str] | None = None,
    allow: Iterable[AllowedRoute] | None = None,
) -> None:
    """Route `prefix`, `prefix/` and `prefix/<path>` of `app` to `asgi_app` and drive its lifespan.

    `headers` (e.g. security headers) are added to every response of the app that does not set them.
    `allow` (None: everything) lists the only requests forwarded, as (method, pattern) pairs; a
    pattern must match the whole decoded path below `prefix` (`/` for `prefix/`). Any other request,
    and any path with a `..` segment, is answered 404 without reaching the app."""
    prefix = "/" + prefix.strip("/")
    if prefix == "/":
        raise ValueError("mount_asgi needs a non-root prefix such as '/chat'")
    mount = Mount(prefix, asgi_app, headers or {}, allow)
    name = "asgi" + prefix.replace("/", "_")
    for uri, handler, suffix in (
        (prefix, mount.redirect, "redirect"),
        (prefix + "/", mount.forward, "root"),
        (prefix + "/<path:path>", mount.forward, "path"),
    ):
        app.add_route(handler, uri, methods=METHODS, strict_slashes=True, name=f"{name}_{suffix}")
    app.register_listener(mount.startup, "after_server_start")
    app.register_listener(mount.shutdown, "before_server_stop")


class Mount:
    """One ASGI app under one prefix: its routes' handlers and its lifespan listeners."""

    def __init__(
        self, prefix: str, asgi_app: ASGIApp, headers: dict[str, str] | None = None,
        allow: Iterable[AllowedRoute] | None = None,
    ):
        self.prefix = prefix
        self.app = asgi_app
        self.headers = headers or {}
        self.allow = None if allow is None else [(method.upper(), re.compile(pattern)) for method, pattern in allow]
        self.lifespan = Lifespan(asgi_app)
        self.open: set[Exchange] = set()

    async def redirect(self, request: Request, **_: Any) -> HTTPResponse:
        query = f"?{request.query_string}" if request.query_string else ""
        return redirect(self.prefix + "/" + query, status=307)

    def allows(self, method: str, path: str) -> bool:
        """Whether `method` on `path` (the decoded full path) may reach the app."""
        if self.allow is None:
            return True
        below = path[len(self.prefix):]
        if ".." in below.split("/"):
            return False
        method = "GET" if method == "HEAD" else method
        return any(m == method and pattern.fullmatch(below) for m, pattern in self.allow)

    async def forward(self, request: Request, **_: Any) -> HTTPResponse | None:
        if not self.allows(request.method, unquote(request.path)):
            raise NotFound(f"Requested URL {request.path} not found")
        exchange = Exchange(request, self.headers)
        self.open.add(exchange)
        try:
            return await exchange.run(self.app)
        finally:
            self.open.discard(exchange)

    async def startup(self, _app: Sanic) -> None:
        await self.lifespan.startup()

    async def shutdown(self, _app: Sanic) -> None:
        # Open streams (SSE) would hold Sanic's graceful shutdown for its whole timeout.
        for exchange in list(self.open):
            exchange.gone.set()
        await self.lifespan.shutdown()


def asgi_scope(request: Request) -> dict:
    """The ASGI `http` scope of a Sanic request."""
    info = request.conn_info
    raw_path = request.path.encode("latin-1")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.version,
        "method": "GET" if request.method == "HEAD" else request.method,  # FastAPI has no HEAD routes
        "scheme": request.scheme,
        "path": unquote(request.path),
        "raw_path": raw_path,
        "root_path": "",
        "query_string": request.query_string.encode("latin-1"),
        "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in request.headers.items()],
        "client": (request.ip, request.port) if info else None,
        "server": (info.server, info.server_port) if info else None,
        "state": {},
    }


class Exchange:
    """One request/response between Sanic and the ASGI app."""

    def __init__(self, request: Request, extra_headers: dict[str, str] | None = None):
        self.request = request
        self.extra_headers = extra_headers or {}
        self.head_only = request.method == "HEAD"
        self.body_given = False
        self.gone = asyncio.Event()  # client disconnected or response complete
        self.status = 500
        self.headers = Header()
        self.started = False
        self.buffer: list[bytes] = []
        self.stream: Any = None  # Sanic's streaming response, once the first chunk is out

    async def run(self, asgi_app: ASGIApp) -> HTTPResponse | None:
        task = asyncio.ensure_future(asgi_app(asgi_scope(self.request), self.receive, self.send))
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:  # Sanic cancels the handler when the client disconnects
            self.gone.set()
            try:
                await asyncio.wait({task}, timeout=DISCONNECT_GRACE_S)
            finally:
                task.cancel()
            raise
        finally:
            self.gone.set()
        if self.stream is not None:
            await self.stream.eof()  # no-op when the app already sent its last chunk
            return None
        if not self.started:
            raise RuntimeError("ASGI app returned without starting a response")
        return HTTPResponse(b"".join(self.buffer), status=self.status, headers=self.headers)

    async def receive(self) -> dict:
        if not self.body_given:
            self.body_given = True
            return {"type": "http.request", "body": self.request.body or b"", "more_body": False}
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        if self.gone.is_set():
            return  # the client has gone: drop what the app still sends
        if message["type"] == "http.response.start":
            self.started = True
            self.status = message["status"]
            for key, value in message.get("headers", []):
                if key.lower() not in HOP_BY_HOP:
                    self.headers.add(key.decode("latin-1"), value.decode("latin-1"))
            for key, value in self.extra_headers.items():
                if key not in self.headers:  # case-insensitive
                    self.headers[key] = value
        elif message["type"] == "http.response.body":
            body, more = message.get("body", b""), message.get("more_body", False)
            if self.stream is None and (self.head_only or not more):
                self.buffer.append(body)  # sent whole by `run`
                return
            if self.stream is None:
                self.stream = await self.request.respond(status=self.status, headers=self.headers)
            if body:
                await self.stream.send(body)
            if not more:
                await self.stream.eof()


class Lifespan:
    """Drives the ASGI lifespan protocol of one app from Sanic listeners."""

    def __init__(self, asgi_app: ASGIApp):
        self.app = asgi_app
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()
        self.replies: asyncio.Queue[dict] = asyncio.Queue()
        self.task: asyncio.Task | None = None

    async def startup(self) -> None:
        self.inbox, self.replies = asyncio.Queue(), asyncio.Queue()  # bound to the running loop
        self.task = asyncio.ensure_future(self._run())
        await self._ask("lifespan.startup")

    async def shutdown(self) -> None:
        if self.task is None or self.task.done():
            return
        await self._ask("lifespan.shutdown")
        await asyncio.wait({self.task}, timeout=5)
        self.task.cancel()

    async def _run(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": {}}
        try:
            await self.app(scope, self.inbox.get, self.replies.put)
        except Exception:  # an app without lifespan support may raise; the spec says ignore it
            log.debug("ASGI app ended its lifespan with an exception", exc_info=True)
        await self.replies.put({"type": "lifespan.ended"})

    async def _ask(self, kind: str) -> None:
        await self.inbox.put({"type": kind})
        reply = await self.replies.get()
        if reply["type"] == f"{kind}.failed":
            raise RuntimeError(f"ASGI {kind} failed: {reply.get('message', '')}")
