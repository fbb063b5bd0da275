"""Operations: liveness (``/healthz``), readiness with what serves (``/readyz``), Prometheus ``/metrics``.

``/healthz`` and the status of ``/readyz`` are open (load balancers and probes carry no key).
The readiness details (table versions, key count, error text) and ``/metrics`` need an admin
key, or a loopback connection while ``service.ops_open_on_loopback`` is on (the default):
a server bound to 127.0.0.1 can only be reached from its own machine.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from fastapi import APIRouter, Request, Response

from service.deps import ServiceDep, caller, keyring, store
from service.edge import CHALLENGE
from service.errors import ApiError
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


def _on_loopback(request: Request) -> bool:
    host = (request.scope.get("server") or ("",))[0]
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def operator(request: Request) -> bool:
    """Whether this caller may read operational details: an admin key, or a loopback connection if allowed."""
    who = caller(request)
    if who is not None and who.role == "admin":
        return True
    return store(request).settings.service.ops_open_on_loopback and _on_loopback(request)


@router.get("/readyz", summary="Model loaded and stores reachable (details: an admin key)")
def readyz(request: Request, response: Response, state: ServiceDep) -> dict[str, Any]:
    ok, checks = _readiness(state)
    if not ok:
        response.status_code = 503
    if not operator(request):
        return {"status": "ready" if ok else "not ready"}
    checks["serving"] = state.status()
    checks["calibrator"] = "loaded" if state.calibrator is not None else "none (conservative default)"
    checks["reranker"] = state.reranker_status
    checks["api_keys"] = len(keyring(request))
    return {"status": "ready" if ok else "not ready", "checks": checks}


@router.get("/metrics", summary="Prometheus metrics (an admin key)", response_class=Response)
def metrics(request: Request) -> Response:
    if not operator(request):
        who = caller(request)
        if who is None:
            raise ApiError(401, "unauthorized", "/metrics needs an admin key (X-API-Key or Authorization: Bearer)", CHALLENGE)
        raise ApiError(403, "forbidden", f"the key {who.name!r} has the role {who.role}; /metrics needs admin")
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
