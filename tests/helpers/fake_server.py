"""The real server app on a scriptable fake chat engine, served like `server.main` (Sanic, one process).

    FAKE_SCRIPTS='[["Hel", "lo", {"raise": "boom"}]]' FAKE_DELAY_S=0.05 python tests/helpers/fake_server.py

Everything but the engines is the real thing: `create_app(Settings.from_env(), ...)`, its
scheduler, routes, listeners and Sanic's own signal handling and graceful shutdown. The chat
engine is one `FakeChatEngine`; each generation takes the next queued script (a list of
pieces), and with none queued echoes the prompt word by word. A piece is a string, or
`{"raise": "message"}` (the engine fails there), or `{"words": N}` (N pieces `w0 `, `w1 `, ...).
`FAKE_DELAY_S` is the pause before each piece; `FAKE_LOAD_ERROR` makes loading the chat model
raise a RuntimeError with that text (a native loader's failure). Embeddings use `FakeEmbeddingEngine` (no torch),
unless `FAKE_EMBEDDINGS=real`. `MODELS_DIR` should hold a tiny metadata-only `.gguf` written by
`write_fake_gguf` (reading the real model's 49k-token vocabulary takes seconds on a busy machine).

Tests may also queue scripts at run time: `POST /_fake/scripts {"scripts": [...], "delay_s": 0.1}`
(a test-only route; it exists only in this script).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from sanic import Request, Sanic  # noqa: E402
from sanic.response import json as json_response  # noqa: E402

from models.fake_chat import FakeChatEngine  # noqa: E402
from models.fake_embedding import FakeEmbeddingEngine  # noqa: E402
from server import create_app  # noqa: E402
from settings import Settings  # noqa: E402


class EngineFailed(RuntimeError):
    """What a `{"raise": ...}` piece raises: an unexpected (non-ServerError) engine failure."""


def expand(script: list) -> list:
    pieces: list = []
    for piece in script:
        if isinstance(piece, str):
            pieces.append(piece)
        elif isinstance(piece, dict) and "raise" in piece:
            pieces.append(EngineFailed(piece["raise"]))
        elif isinstance(piece, dict) and "words" in piece:
            pieces.extend(f"w{i} " for i in range(int(piece["words"])))
        else:
            raise ValueError(f"unknown script piece {piece!r}")
    return pieces


def write_fake_gguf(folder: Path, name: str = "fake-chat.gguf") -> Path:
    """A metadata-only GGUF (ChatML template, four tokens): enough for the registry and the template."""
    import gguf

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_string("tokenizer.chat_template", CHATML)
    writer.add_token_list(["<|endoftext|>", "<|im_start|>", "<|im_end|>", "a"])
    writer.add_token_types([3, 3, 3, 1])
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_app() -> Sanic:
    engine = FakeChatEngine(delay_s=float(os.environ.get("FAKE_DELAY_S", "0")))
    for script in json.loads(os.environ.get("FAKE_SCRIPTS", "[]")):
        engine.enqueue(expand(script))
    embedding_factory = None if os.environ.get("FAKE_EMBEDDINGS") == "real" else FakeEmbeddingEngine
    load_error = os.environ.get("FAKE_LOAD_ERROR")

    def load(model_id: str) -> FakeChatEngine:
        if load_error:
            raise RuntimeError(load_error)
        return engine

    app = create_app(
        Settings.from_env(),
        chat_engine_factory=load,
        embedding_engine_factory=embedding_factory,
        mount_ui=False,
    )
    app.ctx.fake_engine = engine

    @app.post("/_fake/scripts")
    async def queue_scripts(request: Request):
        body = request.json or {}
        for script in body.get("scripts", []):
            engine.enqueue(expand(script))
        if "delay_s" in body:
            engine.delay_s = float(body["delay_s"])
        return json_response({"queued": len(engine._scripts), "prompts": len(engine.prompts)})

    return app


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = build_app()
    settings: Settings = app.ctx.settings
    app.prepare(host=settings.host, port=settings.port, single_process=True, access_log=False, motd=False)
    print(f"Serving (fake engine) on http://{settings.host}:{settings.port}", flush=True)
    Sanic.serve_single(primary=app)


if __name__ == "__main__":
    main()
