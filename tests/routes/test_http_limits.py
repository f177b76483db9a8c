"""413 and 431 come from Sanic's own HTTP parser, which an ASGI client skips: these requests go
through `app.test_client` (sanic-testing), a real Sanic server in this process, one request per app.
"""

from __future__ import annotations

from sanic import Sanic

from models.fake_chat import FakeChatEngine
from models.fake_embedding import FakeEmbeddingEngine
from server import create_app
from settings import Settings
from tests.helpers.fake_server import write_fake_gguf
from tests.helpers.in_process import API_KEY

CHAT = "/v1/chat/completions"


def _http_app(tmp_path, **env: str) -> Sanic:
    write_fake_gguf(tmp_path / "models")

    settings = Settings.from_env({"MODELS_DIR": str(tmp_path / "models"), "TRAINING_DATA_DIR": str(tmp_path / "training"),
                                  "API_KEYS": API_KEY, **env})
    Sanic.test_mode = True
    return create_app(settings, chat_engine_factory=lambda _m: FakeChatEngine(), embedding_engine_factory=FakeEmbeddingEngine,
                      mount_ui=False, name=f"http_{tmp_path.name}")


def test_a_body_over_max_body_bytes_is_413_from_sanics_parser(tmp_path):
    app = _http_app(tmp_path, MAX_BODY_BYTES="2000")
    _, response = app.test_client.post(CHAT, json={"messages": [{"role": "user", "content": "x" * 5000}]},
                                       headers={"Authorization": f"Bearer {API_KEY}"})
    assert response.status == 413 and response.json["error"]["code"] == "payload_too_large"


def test_headers_over_the_limit_are_431_from_sanics_parser(tmp_path):
    app = _http_app(tmp_path)
    _, response = app.test_client.get("/v1/models", headers={"Authorization": f"Bearer {API_KEY}", "X-Big": "a" * 20_000})
    assert response.status == 431 and response.json["error"]["code"] == "headers_too_large"
