"""FastAPI application factory."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from context_store.store import ContextStore
from service.routes_staff import router as staff_router

__all__ = ["create_app"]


def create_app(home: str | Path | None = None, *, store: ContextStore | None = None) -> FastAPI:
    store = store or ContextStore.open(home)
    app = FastAPI(title="freshcontext", version="0.1.0", description="Current, cited context for AI support agents.")
    app.state.store = store

    @app.get("/healthz", tags=["ops"])
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.include_router(staff_router)
    return app
