"""`GET /metrics` (JSON, or Prometheus text), the public `/status` dashboard, and request counting.

`install(app)` registers the blueprint, a middleware pair that counts every response by route
template (never the raw path), method (a standard one, else OTHER) and status, so that label
values stay bounded. The metrics themselves (`app.ctx.metrics`) are wired to the schedulers in
server.py.
`/metrics` is protected by the auth middleware in server.py (`api/auth.py` lists it); `/status`
and its assets are public, and the page asks for the key itself.
"""

from __future__ import annotations

import functools
import html
import logging
import time
from pathlib import Path

from prometheus_client.exposition import choose_encoder
from sanic import Blueprint, Request, Sanic
from sanic.response import HTTPResponse

from api.http import app_context, json_response, page_headers, serve_file
from api.system import VERSION, health_detail
from metrics import Metrics, build_snapshot
from metrics.registry import UNMATCHED

log = logging.getLogger("server.metrics")

bp = Blueprint("observability")

STATIC = Path(__file__).resolve().parent.parent / "metrics" / "static"
PAGE_HEADERS = page_headers(
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    extra={"Cache-Control": "no-cache"},
)
PROMETHEUS_TYPES = {"text/plain", "application/openmetrics-text"}
# Methods counted under their own name; any other (`curl -X M$RANDOM`) is counted as OTHER, so that
# a client cannot add label values (and memory) to every request series without end.
STANDARD_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"})


def method_label(method: str) -> str:
    """The request's method as a bounded label value: a standard method, or OTHER."""
    return method if method in STANDARD_METHODS else "OTHER"


def _metrics(request: Request) -> Metrics:
    return app_context(request).metrics


def wants_prometheus(request: Request) -> bool:
    """`?format=prometheus`, or an Accept header that names a Prometheus format and not JSON.

    Browsers and most HTTP clients send `*/*` (or `application/json, text/plain, */*`): they get JSON.
    """
    fmt = (request.args.get("format") or "").lower()
    if fmt in ("prometheus", "openmetrics", "text"):
        return True
    if fmt == "json":
        return False
    accepted = {part.split(";")[0].strip().lower() for part in request.headers.get("accept", "").split(",")}
    return bool(accepted & PROMETHEUS_TYPES) and "application/json" not in accepted


@bp.get("/metrics")
async def metrics(request: Request) -> HTTPResponse:
    if wants_prometheus(request):
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return HTTPResponse(encode(_metrics(request).registry), content_type=content_type)
    ctx = app_context(request)
    snapshot = build_snapshot(_metrics(request), default_model=ctx.default_model, version=VERSION,
                              replica=ctx.settings.replica_name or None)
    return json_response({**snapshot, "health": health_detail(ctx)})  # /health's states with the full reasons


@bp.get("/status")
async def status_page(request: Request) -> HTTPResponse:
    page = _status_template()
    key = app_context(request).settings.default_api_key  # pre-fills the key field only when set explicitly
    page = page.replace("{{DEFAULT_API_KEY}}", html.escape(key, quote=True))
    return HTTPResponse(page, headers=PAGE_HEADERS, content_type="text/html; charset=utf-8")


@functools.cache
def _status_template() -> str:
    return (STATIC / "status.html").read_text(encoding="utf-8")


serve_file(bp, "/status/assets/status.js", STATIC / "status.js")
serve_file(bp, "/status/assets/status.css", STATIC / "status.css")


def install(app: Sanic) -> None:
    """Register the routes and count every response."""
    metrics: Metrics = app.ctx.metrics
    app.blueprint(bp)

    @app.on_request(priority=1000)  # before the auth check, so 401s are timed too
    async def start_request_clock(request: Request) -> None:
        request.ctx.metrics_started = time.perf_counter()

    @app.on_response(priority=1000)
    async def count_response(request: Request, response: HTTPResponse) -> None:
        try:
            started = getattr(request.ctx, "metrics_started", None)
            seconds = None if started is None else time.perf_counter() - started
            metrics.observe_request(request.uri_template or UNMATCHED, method_label(request.method), response.status,
                                    seconds)
        except Exception:  # noqa: BLE001 - counting must never break a response
            log.exception("could not record request metrics")
