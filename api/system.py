"""Public system routes: `/` (what this server is) and `/health` (is the default model ready).

`/health` is public, so it says only states and short, stable reasons: no paths, no loader or
exception text. The detail is in the log and, behind the key, in `/metrics` (`health_detail`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sanic import Blueprint, Request
from sanic.response import HTTPResponse

from api.docs_catalog import ENDPOINTS as DOCUMENTED
from api.http import app_context, json_response

if TYPE_CHECKING:
    from server import AppContext

bp = Blueprint("system")

VERSION = "1.0.0"
# What `/` lists: every documented endpoint (api/docs_catalog.py), then the pages that are not API.
ENDPOINTS = [f"{method} {path}" for method, path in DOCUMENTED if path != "/"] + [
    "GET /chat/", "GET /docs", "GET /redoc", "GET /openapi.json"]


@bp.get("/")
async def index(request: Request) -> HTTPResponse:
    return json_response(
        {
            "name": "gpt4all-openai-server",
            "version": VERSION,
            "default_model": app_context(request).default_model,
            "embedding_model": app_context(request).settings.embedding_model,
            "endpoints": ENDPOINTS,
        }
    )


MODEL_LOAD_FAILED = "the default model failed to load"
NO_DEFAULT_MODEL = "no default model"


def _model_health(ctx: AppContext) -> tuple[str, str | None, str | None]:
    """The default model's state, a short stable reason (public), and the detail (log and /metrics only)."""
    name = ctx.default_model
    if not name:
        return "failed", ctx.startup_reason or NO_DEFAULT_MODEL, ctx.startup_error
    state, detail = ctx.scheduler.model_state(name)
    if state == "unloaded":  # evicted for another model; it loads again on demand
        state = "ready"
    return state, MODEL_LOAD_FAILED if state == "failed" else None, detail


def public_name(name: str) -> str:
    """A model named by an absolute path (EMBEDDING_MODEL may be a local folder) shows only its last part."""
    return os.path.basename(name.rstrip("/")) if os.path.isabs(name) else name


def embedding_health(name: str, service) -> dict:
    body = {"embedding_model": public_name(name), "embedding_state": service.state}
    if service.state == "failed":
        body["embedding_error"] = service.reason or "the embedding model failed"
    return body


def health_detail(ctx: AppContext) -> dict:
    """What `/health` says, with the full reasons (paths, loader errors): for `/metrics`, behind the key."""
    state, _, detail = _model_health(ctx)
    embeddings = ctx.embeddings
    return {"model": ctx.default_model, "model_state": state, "model_error": detail,
            "embedding_model": ctx.settings.embedding_model, "embedding_state": embeddings.state,
            "embedding_error": embeddings.error, "embedding_dtype": embeddings.dtype,
            "embedding_dtype_reason": embeddings.dtype_reason}


@bp.get("/health")
async def health(request: Request) -> HTTPResponse:
    ctx = app_context(request)
    state, reason, _ = _model_health(ctx)
    body = {"status": "ok", "model": ctx.default_model, "model_state": state}
    if reason:
        body["error"] = reason
    body.update(embedding_health(ctx.settings.embedding_model, ctx.embeddings))
    states = [v for k, v in body.items() if k.endswith("_state")]
    if "failed" in states or "loading" in states:
        body["status"] = "failed" if "failed" in states else "loading"
    return json_response(body, status=200 if body["status"] == "ok" else 503)
