"""FastAPI application factory: ``create_app(home)`` serves one freshcontext home."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from context_store.index import Embedder
from context_store.route import OutboxWorker, Trigger, routing_config
from context_store.store import ContextStore
from service.answers import WEBHOOK_PATH
from service.auth import KeyRing
from service.docs import mount_docs
from service.edge import EdgeGuard
from service.errors import install_error_handlers
from service.mcp import McpHttp, build_server, mcp_config
from service.metrics import Metrics, MetricsMiddleware
from service.routes import ROUTERS
from service.state import EncoderFactory, ServiceState

__all__ = ["create_app"]


def _outbox_worker(store: ContextStore) -> OutboxWorker | None:
    """Deliver routed questions from the serving process when an outbound endpoint is configured."""
    config = routing_config(store.settings)
    if not config.outbound_url:
        return None
    return OutboxWorker(
        store, interval=1.0, secrets=config.outbound_secrets, max_attempts=config.outbound_max_attempts,
        backoff=config.outbound_backoff_seconds, backoff_cap=config.outbound_backoff_max_seconds,
        timeout=config.outbound_timeout_seconds,
    )


def _mcp(app: FastAPI, service: ServiceState) -> McpHttp:
    """The MCP server at /mcp: the same keys, and its responses and outcomes counted in this app's metrics."""
    config = mcp_config(service.store.settings)
    mcp = build_server(service, notify_interval=config.notify_interval_seconds, on_response=app.state.metrics.record_response,
                       on_outcome=app.state.metrics.record_outcome)
    return McpHttp(app, mcp, app.state.keys, config)


def create_app(
    home: str | Path | None = None,
    *,
    store: ContextStore | None = None,
    embedder: Embedder | None = None,
    encoder_for: EncoderFactory | None = None,
    triggers: Sequence[Trigger] = (),
    warm_up: bool = True,
) -> FastAPI:
    """The API for one home. ``embedder`` replaces the query encoder (tests pass a fake), ``encoder_for``
    builds the one for each model a promotion switches to;
    ``triggers`` are extra escalation triggers (see ``context_store.route.decision``)."""
    store = store or ContextStore.open(home)
    service = ServiceState(store, embedder=embedder, encoder_for=encoder_for, triggers=triggers)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            service.warm_up()  # the first agent request should not pay for loading the model
        worker = app.state.outbox_worker = _outbox_worker(store)
        if worker is not None:
            worker.start()
        try:
            async with app.state.mcp.running():  # a mounted app's own lifespan never runs: the host's starts MCP's
                yield
        finally:
            if worker is not None:
                worker.stop()

    app = FastAPI(
        title="freshcontext",
        version="1.0.0",
        description="Current, cited context for AI support agents: retrieval with confidence, decision and evidence trail. "
        "Every /v1 call needs an API key (X-API-Key or Authorization: Bearer) whose role allows it: "
        "agent (retrieval, its own traces, hand-offs), staff (routed questions, answers, review), admin (everything, operations). "
        "The agent tools speak MCP at /mcp (streamable HTTP, the same keys).",
        lifespan=lifespan,
        docs_url=None,  # served by mount_docs from a packaged Swagger UI: no CDN, works offline
        redoc_url=None,
    )
    app.state.store = store
    app.state.service = service
    app.state.keys = KeyRing.from_settings(store.settings)
    app.state.metrics = Metrics()
    app.state.embedder = None  # the staff-answer indexer's embedder; None: the serving one
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.state.mcp = _mcp(app, service)
    mount_docs(app)

    def body_limit(path: str) -> int:
        return routing_config(store.settings).max_webhook_body_bytes if path == WEBHOOK_PATH else store.settings.service.max_body_bytes

    # Outermost last: metrics time every request, the edge refuses before any route reads a body.
    app.add_middleware(EdgeGuard, keys=app.state.keys, store=store, limit_for=body_limit, open_paths=(WEBHOOK_PATH,))
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    return app
