"""The Gradio chat UI at `/chat`, served by Sanic's own server through an in-process ASGI bridge.

- `backend.ChatBackend`: what the UI needs from the server (the server implements it).
- `chat_app.build_chat_ui(backend)`, `chat_app.mount_chat_ui(app, backend)`: the page, and its mount.
- `asgi_bridge.mount_asgi(app, prefix, asgi_app)`: any ASGI app under a prefix of a Sanic app.

Nothing is imported here, so that importing the bridge does not import Gradio (seconds).
"""
