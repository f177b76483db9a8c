"""The ASGI bridge, on a real Sanic server (same loop as the test) with a tiny ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket

import httpx
import pytest
import pytest_asyncio
from sanic import Sanic, response

from gradio_ui.asgi_bridge import mount_asgi

_names = itertools.count()


class TinyApp:
    """An ASGI app that records what it sees and streams when told to."""

    def __init__(self):
        self.lifespan: list[str] = []
        self.requests: list[dict] = []
        self.release = asyncio.Event()  # lets /sub/stream send its second chunk
        self.disconnected = asyncio.Event()

    async def __call__(self, scope, receive, send):
        if scope["type"] == "lifespan":
            return await self.run_lifespan(receive, send)
        message = await receive()
        self.requests.append({**scope, "body": message["body"]})
        if scope["path"] == "/sub/stream":
            return await self.stream(receive, send)
        if scope["path"] == "/sub/boom":
            raise RuntimeError("boom")
        headers = [(b"content-type", b"text/plain"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
        await send({"type": "http.response.start", "status": 201, "headers": headers})
        await send({"type": "http.response.body", "body": b"got " + message["body"]})

    async def run_lifespan(self, receive, send):
        while True:
            kind = (await receive())["type"]
            self.lifespan.append(kind)
            await send({"type": kind + ".complete"})
            if kind == "lifespan.shutdown":
                return

    async def stream(self, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": b"data: one\n\n", "more_body": True})
        await self.release.wait()
        await send({"type": "http.response.body", "body": b"data: two\n\n", "more_body": True})
        if (await receive())["type"] == "http.disconnect":  # the client keeps the stream open
            self.disconnected.set()


@contextlib.asynccontextmanager
async def serving(app: Sanic):
    """`app` on a free loopback port in this event loop: a client for it, and the server."""
    app.config.TOUCHUP = False  # touch-up rewrites shared classes once per process; a second app trips on it
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = await app.create_server(sock=sock, return_asyncio_server=True, access_log=False)
    await server.startup()
    await server.before_start()
    await server.after_start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}", timeout=5) as client:
            yield client, server
    finally:
        await server.before_stop()
        server.close()
        await server.wait_closed()
        await server.after_stop()


@pytest_asyncio.fixture
async def served():
    """A Sanic server on a free loopback port with TinyApp mounted at /sub."""
    tiny = TinyApp()
    app = Sanic(f"bridge_test_{next(_names)}")

    @app.get("/native")
    async def native(_request):
        return response.text("native")

    mount_asgi(app, "/sub", tiny)
    async with serving(app) as (client, server):
        yield tiny, client, server


@pytest.mark.asyncio
async def test_request_reaches_the_app_with_path_query_body_and_headers(served):
    tiny, client, _ = served
    r = await client.post("/sub/a%20b?q=1", content=b"hello", headers={"X-Thing": "yes"})
    assert r.status_code == 201
    assert r.text == "got hello"
    assert r.headers.get_list("set-cookie") == ["a=1", "b=2"]
    seen = tiny.requests[-1]
    assert (seen["method"], seen["path"], seen["raw_path"], seen["query_string"]) == (
        "POST", "/sub/a b", b"/sub/a%20b", b"q=1")
    assert (b"x-thing", b"yes") in seen["headers"]
    assert seen["root_path"] == ""


@pytest.mark.asyncio
async def test_prefix_redirects_to_slash_and_other_routes_are_untouched(served):
    tiny, client, _ = served
    r = await client.get("/sub?x=1")
    assert (r.status_code, r.headers["location"]) == (307, "/sub/?x=1")
    assert (await client.get("/sub/")).status_code == 201
    assert (await client.get("/native")).text == "native"
    assert (await client.get("/subway")).status_code == 404
    assert [req["path"] for req in tiny.requests] == ["/sub/"]


@pytest.mark.asyncio
async def test_head_and_options_work(served):
    _, client, _ = served
    head = await client.head("/sub/page")
    assert head.status_code == 201
    assert head.content == b""
    assert head.headers["content-length"] == str(len(b"got "))
    assert served[0].requests[-1]["method"] == "GET"  # what a GET would answer, without the body
    assert (await client.options("/sub/page")).status_code == 201


@pytest.mark.asyncio
async def test_streamed_chunks_arrive_before_the_response_ends(served):
    tiny, client, _ = served
    async with client.stream("GET", "/sub/stream") as r:
        assert r.headers["content-type"] == "text/event-stream"
        chunks = r.aiter_raw()
        assert await asyncio.wait_for(anext(chunks), 2) == b"data: one\n\n"  # while the app still waits
        tiny.release.set()
        assert await asyncio.wait_for(anext(chunks), 2) == b"data: two\n\n"


@pytest.mark.asyncio
async def test_client_disconnect_reaches_the_app(served):
    tiny, client, _ = served
    async with client.stream("GET", "/sub/stream") as r:
        await anext(r.aiter_raw())
        tiny.release.set()
    # leaving the block closes the connection mid-stream
    await asyncio.wait_for(tiny.disconnected.wait(), 2)


@pytest.mark.asyncio
async def test_server_stop_ends_open_streams(served):
    tiny, client, server = served
    async with client.stream("GET", "/sub/stream") as r:
        await anext(r.aiter_raw())
        tiny.release.set()
        await server.before_stop()
        await asyncio.wait_for(tiny.disconnected.wait(), 2)
        assert tiny.lifespan == ["lifespan.startup", "lifespan.shutdown"]


@pytest.mark.asyncio
async def test_app_error_becomes_500(served):
    _, client, _ = served
    r = await client.get("/sub/boom")
    assert r.status_code == 500
    assert "Traceback" not in r.text


@pytest.mark.asyncio
async def test_lifespan_follows_the_server(served):
    tiny, _, server = served
    assert tiny.lifespan == ["lifespan.startup"]
    await server.before_stop()
    assert tiny.lifespan == ["lifespan.startup", "lifespan.shutdown"]


@pytest_asyncio.fixture
async def guarded():
    """Like `served`, with an allow-list: GET /sub/ and /sub/page/<word>, POST /sub/post."""
    tiny = TinyApp()
    app = Sanic(f"bridge_test_{next(_names)}")
    allow = [("GET", r"/"), ("GET", r"/page/\w+"), ("post", r"/post")]
    mount_asgi(app, "/sub", tiny, allow=allow)
    async with serving(app) as (client, _server):
        yield tiny, client


@pytest.mark.asyncio
async def test_an_allow_list_forwards_only_the_routes_it_lists(guarded):
    tiny, client = guarded
    for method, path in (("GET", "/sub/"), ("HEAD", "/sub/"), ("GET", "/sub/page/one?x=1"), ("POST", "/sub/post")):
        assert (await client.request(method, path)).status_code == 201, (method, path)
    assert (await client.get("/sub")).status_code == 307  # the redirect to /sub/ stays
    for method, path in (
        ("POST", "/sub/"), ("OPTIONS", "/sub/"), ("GET", "/sub/post"), ("PUT", "/sub/post"),
        ("GET", "/sub/page/one/two"), ("GET", "/sub/page/"), ("GET", "/sub/pages/one"), ("GET", "/sub/other"),
        ("GET", "/sub/page/%2E%2E"), ("GET", "/sub/page/..%2Fpost"), ("POST", "/sub/post/"),
    ):
        assert (await client.request(method, path)).status_code == 404, (method, path)
    assert [(r["method"], r["path"]) for r in tiny.requests] == [
        ("GET", "/sub/"), ("GET", "/sub/"), ("GET", "/sub/page/one"), ("POST", "/sub/post")]
