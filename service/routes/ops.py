"""Operations: liveness (``/healthz``), readiness with what serves (``/readyz``), Prometheus ``/metrics``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.deps import ServiceDep, keyring
from service.metrics import CONTENT_TYPE_LATEST

__all__ = ["router"]

router = APIRouter(tags=["ops"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


def _readiness(state: Any) -> tuple[bool, dict[str, Any]]:
    checks: dict[str, Any] = {}
    ok = True
    try:
        state.store.ping()
        checks["sql"] = "ok"
    except Exception as exc:  # any driver error means not ready
        checks["sql"], ok = f"unreachable: {exc.__class__.__name__}: {exc}", False
    try:
        checks["lancedb_versions"] = state.store.index.versions()
        snap = state.dense.snapshot()
        checks["dense_index"] = {"rows": snap.size, "table_version": snap.version, "ann": "projected" if snap.projection is not None else "exact"}
    except Exception as exc:
        checks["lancedb"], ok = f"unreachable: {exc.__class__.__name__}: {exc}", False
    try:
        state.embedder.encode(["readiness probe"])
        checks["model"] = {"name": state.embedder.name, "loaded": True}
    except Exception as exc:
        checks["model"], ok = f"not loaded: {exc.__class__.__name__}: {exc}", False
    return ok, checks


@router.get("/readyz", summary="Model loaded and stores reachable")
def readyz(request: Request, response: Response, state: ServiceDep) -> dict[str, Any]:
    ok, checks = _readiness(state)
    checks["serving"] = state.status()
    checks["calibrator"] = "loaded" if state.calibrator is not None else "none (conservative default)"
    checks["reranker"] = state.reranker_status
    checks["api_keys"] = len(keyring(request))
    if not ok:
        response.status_code = 503
    return {"status": "ready" if ok else "not ready", "checks": checks}


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
