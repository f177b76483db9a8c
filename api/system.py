"""Public system routes: `/` (what this server is) and `/health` (is the default model ready)."""

from __future__ import annotations

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from api.http import json_response

bp = Blueprint("system")

VERSION = "1.0.0"
ENDPOINTS = [
    "GET /health",
    "GET /v1/models",
    "POST /v1/chat/completions",
    "POST /v1/completions",
    "POST /v1/embeddings",
    "POST /v1/training/ingest",
    "GET /v1/training/datasets",
    "GET /metrics",
    "GET /status",
    "GET /chat/",
    "GET /docs",
    "GET /redoc",
    "GET /openapi.json",
]


@bp.get("/")
async def index(request: Request) -> HTTPResponse:
    return json_response(
        {
            "name": "gpt4all-openai-server",
            "version": VERSION,
            "default_model": request.app.ctx.default_model,
            "embedding_model": request.app.ctx.settings.embedding_model,
            "endpoints": ENDPOINTS,
        }
    )


@bp.get("/health")
async def health(request: Request) -> HTTPResponse:
    ctx = request.app.ctx
    name = ctx.default_model
    state, error = ctx.scheduler.model_state(name) if name else ("failed", ctx.startup_error)
    if state == "unloaded":  # evicted for another model; it loads again on demand
        state = "ready"
    body = {"status": "ok", "model": name, "model_state": state}
    if error:
        body["error"] = error
    for check in ctx.health_checks:
        body.update(check())
    states = [v for k, v in body.items() if k.endswith("_state")]
    if "failed" in states or "loading" in states:
        body["status"] = "failed" if "failed" in states else "loading"
    return json_response(body, status=200 if body["status"] == "ok" else 503)
