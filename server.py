"""The server: `create_app(settings)` wires routes, auth, schedulers and engines; `main()` runs it.

Start-up loads the default chat model in the background (so `/health` can say "loading"), and
shutdown answers every waiting job, lets running generations finish within a grace period, and
frees the engines on their own threads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import time
from dataclasses import dataclass
from functools import partial
from typing import Callable

from sanic import Request, Sanic

from api import auth, completions, embeddings, responses, system, training
from api import docs, hosts, observability
from api import errors as api_errors
from api.generation import GenerationService
from api.http import add_data_headers, add_static_headers, is_json
from api.protocol_responses import ModelCard
from api.responses_service import ResponsesService
from api.responses_source import ConversationReplies
from data.folder_lock import FolderInUse, claim_folder
from data.response_store import ResponseStore, StoreCorrupt, check_database
from data.training_store import TrainingStore
from metrics import Metrics
from models.interfaces import ChatEngine, PrefixCache
from models.registry import ModelRegistry, ModelRegistryError
from models.template_sandbox import TemplateSandbox
from scheduler.embedding_batcher import EmbeddingBatcher
from scheduler.embedding_service import EmbeddingService
from scheduler.generation import GenerationScheduler
from settings import Settings, SettingsError

log = logging.getLogger("server")

ChatEngineFactory = Callable[[str], ChatEngine]
SHUTDOWN_FLUSH_S = 5.0  # after the grace: time for cut-short streams' error events before Sanic drops connections


@dataclass(eq=False)
class AppContext:
    """Everything a route can reach, as `request.app.ctx`: built once by `build_context`."""

    settings: Settings
    registry: ModelRegistry
    scheduler: GenerationScheduler
    generation: GenerationService
    embeddings: EmbeddingService
    training: TrainingStore
    responses: ResponsesService
    metrics: Metrics
    extra_model_cards: list[ModelCard]  # listed by /v1/models beside the chat models (the embedding model)
    default_model: str | None = None  # set at start-up
    startup_error: str | None = None  # why there is no default model: the detail, for the log and /metrics
    startup_reason: str | None = None  # the same, short and without paths, for /health
    draining: asyncio.Task | None = None  # the shutdown drain, once SIGTERM came


def llama_factory(settings: Settings, registry: ModelRegistry) -> ChatEngineFactory:
    def load(model_id: str) -> ChatEngine:
        from models.llama_engine import LlamaEngine

        model = registry.get(model_id)
        chat_format = registry.chat_format(model)  # reads and checks the metadata before native code sees the file
        return LlamaEngine(
            model.path,
            document_start=chat_format.bos_token or chat_format.eos_token,
            n_ctx=settings.n_ctx,
            n_threads=settings.threads,
            n_batch=settings.n_batch,
            device=settings.device,
            prefix_cache=PrefixCache(
                settings.prefix_cache,
                settings.prefix_cache_slots,
                settings.prefix_cache_mb,
                settings.prefix_cache_share,
                settings.prefix_cache_exact,
            ),
        )

    return load


def load_embedding_engine(settings: Settings):
    from models.embedding_engine import SentenceTransformerEngine

    return SentenceTransformerEngine.from_settings(settings)


def create_app(
    settings: Settings,
    *,
    chat_engine_factory: ChatEngineFactory | None = None,
    embedding_engine_factory: Callable[[], object] | None = None,
    name: str = "gpt4all_server",
    mount_ui: bool = True,
) -> Sanic:
    app = Sanic(name, ctx=build_context(settings, chat_engine_factory, embedding_engine_factory))
    _configure(app, settings)
    api_errors.install(app)
    app.blueprint(system.bp)
    app.blueprint(completions.bp)
    app.blueprint(responses.bp)
    app.blueprint(embeddings.bp)
    app.blueprint(training.bp)
    observability.install(app)  # /metrics, /status, request counting
    docs.install(app)  # /openapi.json, /docs, /redoc (offline)
    if mount_ui:
        from gradio_ui import use_temp_dir

        use_temp_dir(settings.training_data_dir.parent / "gradio")  # before Gradio is imported: not /tmp/gradio
        from gradio_ui.chat_app import mount_chat_ui  # Gradio takes seconds to import
        from gradio_ui.scheduler_backend import SchedulerChatBackend

        mount_chat_ui(app, SchedulerChatBackend(app.ctx), default_api_key=settings.default_api_key)

    allowed_hosts = hosts.allowed_hosts(settings.host, settings.allowed_hosts, hosts.local_names)

    @app.on_request(priority=500)  # before the key check: a DNS-rebinding page learns nothing, not even a 401
    async def check_host(request: Request) -> None:
        hosts.check_host(request.headers.get("host", ""), allowed_hosts)

    @app.on_request(priority=100)
    async def require_api_key(request: Request) -> None:
        if auth.is_protected(request.path) and not _is_cors_preflight(request, settings):
            auth.check_key(settings.api_keys, settings.require_api_key, auth.bearer_token(request.headers.get("authorization")))

    @app.on_response(priority=500)
    async def add_cache_headers(request: Request, response) -> None:
        if is_json(response) or auth.is_protected(request.path):
            add_data_headers(response)
        elif request.route is not None and request.route.extra.static:  # app.static files, e.g. /status/assets
            add_static_headers(response)
        if settings.replica_name:  # behind a load balancer: which replica answered
            response.headers["X-Replica"] = settings.replica_name

    _install_lifecycle(app, settings)
    return app


def _configure(app: Sanic, settings: Settings) -> None:
    app.config.REQUEST_MAX_SIZE = settings.max_body_bytes
    app.config.RESPONSE_TIMEOUT = settings.queue_timeout_s + settings.generation_timeout_s + 30
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.ACCESS_LOG = False
    # CORS is off unless CORS_ORIGINS names origins (sanic-ext would otherwise answer every origin).
    app.config.CORS = bool(settings.cors_origins)
    app.config.CORS_ORIGINS = ",".join(settings.cors_origins)
    # Sanic closes the listener and waits for open connections (GRACEFUL_SHUTDOWN_TIMEOUT) only after the
    # before_server_stop listeners return; so the drain runs meanwhile, and its deadline leaves time to flush.
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = settings.shutdown_grace_s + SHUTDOWN_FLUSH_S


def build_context(settings: Settings, chat_engine_factory: ChatEngineFactory | None = None,
                  embedding_engine_factory: Callable[[], object] | None = None) -> AppContext:
    """The schedulers, services and store, with the metrics subscribed to them (the only wiring)."""
    sandbox = TemplateSandbox(timeout_s=settings.chat_template_timeout_s, max_chars=4 * settings.max_body_bytes)
    registry = ModelRegistry(settings.models_dir, settings.model_name, sandbox)
    scheduler = GenerationScheduler(
        chat_engine_factory or llama_factory(settings, registry),
        max_queue=settings.max_queue,
        max_queue_per_key=settings.queue_per_key,
        max_loaded=settings.max_loaded_models,
        queue_timeout_s=settings.queue_timeout_s,
        generation_timeout_s=settings.generation_timeout_s,
    )
    embeddings = EmbeddingService(
        settings.embedding_model,
        embedding_engine_factory or partial(load_embedding_engine, settings),
        lambda engine: EmbeddingBatcher.from_settings(engine, settings),
    )
    metrics = Metrics(live={"generation": scheduler.stats, "embedding": embeddings.stats})  # one registry per app
    scheduler.listeners.append(metrics.observe_generation)
    embeddings.batch_listeners.append(metrics.observe_embedding_batch)
    embeddings.queue_listeners.append(metrics.observe_embedding_wait)
    generation = GenerationService(scheduler, registry, embedding_model=settings.embedding_model,
                                   max_n=settings.max_n, max_prompts=settings.max_prompts)
    store = ResponseStore(settings.responses_db_path, ttl_s=settings.responses_ttl_s,
                          max_bytes=settings.responses_max_mb * 2**20, replica=settings.replica_name)
    return AppContext(
        settings=settings,
        registry=registry,
        scheduler=scheduler,
        generation=generation,
        embeddings=embeddings,
        training=TrainingStore(settings.training_data_dir),
        responses=ResponsesService(store, ConversationReplies(generation)),
        metrics=metrics,
        extra_model_cards=[ModelCard(id=settings.embedding_model, created=int(time.time()), owned_by="sentence-transformers")],
    )


def _install_lifecycle(app: Sanic, settings: Settings) -> None:
    """Start-up loads the default model in the background; shutdown drains, then frees the engines."""
    ctx: AppContext = app.ctx

    @app.before_server_start
    async def start_generation(app: Sanic) -> None:
        try:
            ctx.default_model = ctx.registry.default().id
        except ModelRegistryError as exc:
            ctx.startup_error, ctx.startup_reason = str(exc), exc.reason
            log.error("no default chat model: %s", exc)
        await ctx.scheduler.start(preload=ctx.default_model)
        await ctx.embeddings.start()
        await ctx.responses.start()

    @app.before_server_stop
    async def stop_generation(app: Sanic) -> None:
        # Refuses new jobs and answers waiting ones at once; running ones get the grace, then an error event.
        ctx.draining = asyncio.get_running_loop().create_task(ctx.scheduler.close(grace_s=settings.shutdown_grace_s))
        await asyncio.sleep(0)

    @app.on_response
    async def close_connection_when_draining(request: Request, response) -> None:
        if ctx.draining is not None and request.stream is not None:
            request.stream.keep_alive = False  # `Connection: close`: Sanic's shutdown waits on open connections

    @app.after_server_stop
    async def stop_engines(app: Sanic) -> None:
        if ctx.draining is not None:
            await ctx.draining
        await ctx.responses.stop()  # background responses still going are kept as failed
        await ctx.embeddings.stop()
        ctx.registry.sandbox.close()


def _is_cors_preflight(request: Request, settings: Settings) -> bool:
    """A browser's preflight carries no credentials; it is answered (with no data) only when CORS is on."""
    return bool(settings.cors_origins) and request.method == "OPTIONS" and "access-control-request-method" in request.headers


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        sys.exit(f"error: {exc}")
    try:
        # Held until this process ends: a second server on the same folder would lose examples.
        claim_folder(settings.training_data_dir)
    except FolderInUse as exc:
        sys.exit(f"error: {exc}")
    try:
        check_database(settings.responses_db_path)  # a corrupt file is a start-up error, not 503s later
    except StoreCorrupt as exc:
        sys.exit(f"error: {exc}")
    settings, generated_key = settings.with_generated_key()
    if generated_key:
        # Printed once; child processes of the reloader inherit it through the environment.
        os.environ["API_KEYS"] = generated_key
        print(f"No API_KEYS set: generated this key for this run: {generated_key}", flush=True)
    from sanic.worker.loader import AppLoader

    loader = AppLoader(factory=partial(create_app, settings))
    app = loader.load()
    app.prepare(
        host=settings.host,
        port=settings.port,
        single_process=not settings.reload,
        auto_reload=settings.reload,
        access_log=False,
        motd=False,
    )
    print(f"Serving on http://{settings.host}:{settings.port} (docs: /docs, chat: /chat/, status: /status)", flush=True)
    if settings.reload:
        Sanic.serve(primary=app, app_loader=loader)
    else:
        Sanic.serve_single(primary=app)


if __name__ == "__main__":
    main()
