"""FastAPI application factory: ``create_app(home)`` serves one freshcontext home."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from context_store.index.embed.protocol import Embedder
from context_store.route.decision import Trigger
from context_store.store.context_store import ContextStore
from service.auth import KeyRing
from service.errors import install_error_handlers
from service.metrics import Metrics, MetricsMiddleware
from service.routes import ops_router, v1_router
from service.routes_staff import router as staff_router
from service.state import EncoderFactory, ServiceState

__all__ = ["create_app"]


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
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if warm_up:
            service.warm_up()  # the first agent request should not pay for loading the model
        yield

    app = FastAPI(
        title="freshcontext",
        version="1.0.0",
        description="Current, cited context for AI support agents: retrieval with confidence, decision and evidence trail. "
        "Every /v1 call needs an API key (X-API-Key or Authorization: Bearer).",
        lifespan=lifespan,
    )
    app.state.store = store
    app.state.service = service
    app.state.keys = KeyRing.from_settings(store.settings)
    app.state.metrics = Metrics()
    install_error_handlers(app)
    app.include_router(v1_router)
    app.include_router(ops_router)
    app.add_middleware(MetricsMiddleware, metrics=app.state.metrics)
    app.include_router(staff_router)
    return app
