"""The Gradio chat UI at `/chat`, served by Sanic's own server through an in-process ASGI bridge.

- `backend.ChatBackend`: what the UI needs from the server (the server implements it).
- `chat_app.build_chat_ui(backend)`, `chat_app.mount_chat_ui(app, backend)`: the page, and its mount.
- `asgi_bridge.mount_asgi(app, prefix, asgi_app)`: any ASGI app under a prefix of a Sanic app.
- `use_temp_dir(path)`: Gradio's temp folder, private to this server (see below).

Nothing of Gradio is imported here, so that importing the bridge does not import Gradio (seconds).

Gradio keeps uploads and caches in `GRADIO_TEMP_DIR`, by default the host-wide `/tmp/gradio`
(shared by every user and Gradio app of the host). `use_temp_dir` is the one place that sets it:
the server calls it with `<TRAINING_DATA_DIR>/../gradio` (the project's state folder; `data/gradio`
by default) before it imports Gradio, and `chat_app` falls back to `DEFAULT_TEMP_DIR` when it is
imported without it. Some Gradio modules read the variable once, at import: it must be set first.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TEMP_DIR = Path("data/gradio")  # beside the default TRAINING_DATA_DIR (data/training)


def use_temp_dir(path: str | os.PathLike) -> Path:
    """Make `path` (created, owner-only) Gradio's temp folder: sets `GRADIO_TEMP_DIR`."""
    folder = Path(path).resolve()
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder
