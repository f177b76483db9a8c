"""The real app in this process, on the fake engines: route tests that answer in milliseconds.

    async with served_app(tmp_path, MAX_N=2) as app:
        response = await app.client.post("/v1/completions", json=..., headers=app.headers())
        app.chat.enqueue(["Hel", "lo"])   # the next generation's pieces (models/fake_chat.py)

`create_app` builds everything but the engines: routes, scheduler, services, listeners, error
mapping. Requests go through Sanic's ASGI interface with sanic-testing's `SanicASGITestClient`,
started once: its own `request` runs the server's start and stop listeners around every request,
which would load and free the model for each one; here they run once around the test.
"""

from __future__ import annotations

import contextlib
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import httpx
from sanic import Sanic
from sanic_testing.testing import SanicASGITestClient

from models.fake_chat import FakeChatEngine
from models.fake_embedding import FakeEmbeddingEngine
from server import create_app
from settings import Settings
from tests.helpers.fake_server import write_fake_gguf

API_KEY = "sk-in-process"
HOST = "mockserver"  # sanic-testing's base URL: allowed below like a deployment's own hostname
_names = itertools.count()


class StartedClient(SanicASGITestClient):
    """sanic-testing's ASGI client, with the app's lifecycle run once (`start`/`stop`), not per request."""

    async def start(self) -> None:
        app = self.sanic_app
        app.router.reset()
        app.signal_router.reset()
        await app._startup()
        await app._server_event("init", "before")
        await app._server_event("init", "after")

    async def stop(self) -> None:
        await self.sanic_app._server_event("shutdown", "before")
        await self.sanic_app._server_event("shutdown", "after")

    async def request(self, method, url, *args, **kwargs) -> httpx.Response:  # type: ignore[override]
        return await httpx.AsyncClient.request(self, method, url, *args, **kwargs)  # a plain httpx response

    @contextlib.asynccontextmanager
    async def stream(self, method, url, *args, **kwargs):  # type: ignore[override]
        async with httpx.AsyncClient.stream(self, method, url, *args, **kwargs) as response:
            yield response


@dataclass
class ServedApp:
    app: Sanic
    client: StartedClient
    chat: FakeChatEngine
    embedding: FakeEmbeddingEngine
    settings: Settings

    def headers(self, key: str = API_KEY) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


@contextlib.asynccontextmanager
async def served_app(tmp_path: Path, embedding: FakeEmbeddingEngine | None = None, **env: str) -> AsyncIterator[ServedApp]:
    """The app on fake engines (`embedding`: a configured one); `env` overrides settings by their
    environment names (`MAX_N="2"`)."""
    write_fake_gguf(tmp_path / "models")
    settings = Settings.from_env({
        "MODELS_DIR": str(tmp_path / "models"),
        "TRAINING_DATA_DIR": str(tmp_path / "data" / "training"),
        "API_KEYS": API_KEY,
        "ALLOWED_HOSTS": HOST,
        "DEFAULT_API_KEY": "",
        **env,
    })
    chat, embedding = FakeChatEngine(), embedding or FakeEmbeddingEngine()
    Sanic.test_mode = True  # lets each test build an app of its own name
    app = create_app(settings, chat_engine_factory=lambda _model: chat, embedding_engine_factory=lambda: embedding,
                     mount_ui=False, name=f"in_process_{next(_names)}")
    client = StartedClient(app)
    await client.start()
    try:
        yield ServedApp(app, client, chat, embedding, settings)
    finally:
        await client.stop()
        await client.aclose()
