"""Helpers for the page tests in headless Chromium: launch it offline, watch what a page asks for,
and serve a small Sanic app on a thread.

`offline_context` lets a page reach only the server under test; anything else is aborted and
recorded, and console errors are recorded too, so a test can assert that a page needs no CDN.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-quic",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",  # no network but the server
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def missing() -> str:
    return f"{CHROMIUM} is missing (apt-get install -y chromium)"


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def require_chromium() -> None:
    """Skip the calling module (or test) loudly where Chromium is missing, except under CI=true.

    Under CI a missing browser is a failure, not a skip: `launched_chromium` fails every test that
    needs it, and the rest of the suite still runs (a failure here, at collection, would stop it).
    """
    if not Path(CHROMIUM).exists() and not in_ci():
        pytest.skip(f"!!! BROWSER TESTS SKIPPED: {missing()} !!!", allow_module_level=True)


@contextmanager
def launched_chromium() -> Iterator[object]:
    """Debian's Chromium, headless and offline, driven by Playwright (never a downloaded browser)."""
    if in_ci():
        if not Path(CHROMIUM).exists():
            pytest.fail(f"BROWSER TESTS CANNOT RUN under CI=true: {missing()}; CI must install it", pytrace=False)
        from playwright.sync_api import sync_playwright  # and a missing Playwright fails too
    else:
        require_chromium()
        sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    outside: list[str] = field(default_factory=list)  # requests to anything but the server (aborted)
    errors: list[str] = field(default_factory=list)  # console errors and uncaught exceptions


@contextmanager
def offline_context(browser, base_url: str, **options) -> Iterator[tuple[object, PageLog]]:
    """A fresh context (empty localStorage) whose pages may reach only `base_url`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900}, **options)
    log = PageLog()

    def route(request_route) -> None:
        url = request_route.request.url
        if url.startswith(base_url) or url.startswith(("data:", "blob:")):
            request_route.continue_()
        else:
            log.outside.append(url)
            request_route.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("console", lambda message: log.errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: log.errors.append(f"uncaught: {error}"))
    try:
        yield page, log
    finally:
        context.close()


@contextmanager
def serve_in_thread(app) -> Iterator[str]:
    """Run a Sanic app on a free loopback port on its own thread and loop; yield its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name=f"sanic-{app.name}", daemon=True)
    thread.start()

    async def start():
        server = await app.create_server(sock=sock, return_asyncio_server=True, access_log=False)
        await server.startup()
        await server.before_start()
        await server.after_start()
        return server

    async def stop(server):
        await server.before_stop()
        server.close()
        await asyncio.wait_for(server.wait_closed(), 10)
        await server.after_stop()

    server = asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        asyncio.run_coroutine_threadsafe(stop(server), loop).result(30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
