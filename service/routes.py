"""The ``/v1`` endpoints agents call, and the operational ones (health, readiness, metrics)."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy import text

from context_store.retrieve import RetrievalResult, parse_as_of
from context_store.route.decision import Decision, decide
from context_store.route.signals import routing_signals
from context_store.route.traces import get_trace, new_trace_id, record_trace, replay, trace_dict
from context_store.state.documents import document_versions
from context_store.store.models import Document
from service.metrics import CONTENT_TYPE_LATEST
from service.schemas import DocumentVersionPublic, DocumentVersions, RetrieveRequest, RetrieveResponse
from service.state import ServiceState, Serving

__all__ = ["ops_router", "v1_router"]


def _state(request: Request) -> ServiceState:
    return request.app.state.service


def require_key(request: Request) -> str:
    client = request.app.state.keys.check(request)
    request.state.client = client
    return client


v1_router = APIRouter(prefix="/v1", dependencies=[Depends(require_key)])
ops_router = APIRouter(tags=["ops"])


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


def _response(result: RetrievalResult, decision: Decision, trace_id: str, source: str, state: Serving) -> dict[str, Any]:
    now = result.served_at
    user = None
    if result.user_id is not None:
        max_age_h = state.store.settings.user_state_max_age_hours
        age = _age(now, result.user_captured_at)
        user = {
            "user_id": result.user_id, "snapshot_version_id": result.user_version_id, "captured_at": result.user_captured_at,
            "age_seconds": age, "max_age_hours": max_age_h, "stale": age is None or age > max_age_h * 3600,
            "facts": [{"key": f.key, "text": f.text, "score": f.score} for f in result.user_state],
        }
    return {
        "trace_id": trace_id, "query": result.query, "mode": result.mode, "k": result.k, "as_of": result.as_of,
        "served_at": now,
        "results": [
            {
                "text": h.text, "doc_id": h.doc_id, "version_id": h.version_id, "chunk_id": h.chunk_id, "title": h.title,
                "heading": h.heading, "source_path": h.source_path, "kind": h.kind, "score": h.score,
                "vector_score": h.vector_score, "text_score": h.text_score, "source_changed_at": h.source_changed_at,
                "indexed_at": h.indexed_at, "age_seconds": _age(now, h.source_changed_at),
                "current": h.valid_to is None, "valid_from": h.valid_from, "valid_to": h.valid_to,
            }
            for h in result.results
        ],
        "user": user, "confidence": decision.confidence, "confidence_source": source, "threshold": decision.threshold,
        "decision": decision.decision, "reasons": [r.as_dict() for r in decision.reasons],
        "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()},
    }


@v1_router.post("/retrieve", response_model=RetrieveResponse, tags=["retrieval"], summary="Context, confidence and decision for a question")
def retrieve(body: RetrieveRequest, request: Request) -> dict[str, Any]:
    """Current company chunks (cited by document version), the user's current state, a calibrated
    confidence, an ``answer``/``escalate`` decision with typed reasons, and a ``trace_id`` for the evidence trail."""
    started = time.perf_counter()
    state = _state(request).serving()  # one deployment for the whole request, even if a promotion lands meanwhile
    result = state.retriever.retrieve(body.query, user_id=body.user_id, k=body.k, as_of=body.as_of, filters=body.filters, mode=body.mode)
    confidence, source = state.confidence(result)
    extra = [trigger(result, confidence) for trigger in state.triggers]
    signals = routing_signals(state.store, state.embedder, result, conversation_id=body.conversation_id)  # repeat contact, sensitive, ...
    decision = decide(result, confidence, state.config.confidence_threshold, extra_reasons=[*extra, *signals.reasons])
    trace_id = new_trace_id()
    # The routed question, the asked-question log and the trace commit as one transaction: a
    # trace never names a question that was not queued, and each request takes the write lock once.
    with state.store.session() as session:
        routed = signals.follow_up(decision.decision, decision.reasons, confidence=confidence, trace_id=trace_id, session=session)
        payload = _response(result, decision, trace_id, source, state)
        payload["routed_question"] = routed.as_dict() if routed else None
        record_trace(
            state.store, result, decision, confidence_source=source, trace_id=trace_id,
            latency_ms=(time.perf_counter() - started) * 1000, client=getattr(request.state, "client", None), session=session,
        )
    metrics = request.app.state.metrics
    metrics.results.inc(len(result.results))
    metrics.decisions.labels(decision.decision).inc()
    metrics.superseded.inc(result.dropped_superseded)
    for reason in decision.reasons:
        metrics.reasons.labels(reason.code).inc()
    return payload


@v1_router.get("/traces/{trace_id}", tags=["evidence"], summary="The evidence trail of one response")
def trace(trace_id: str, request: Request, replay_texts: bool = Query(False, alias="replay", description="Rebuild the served texts from the versioned store and verify their hashes.")) -> dict[str, Any]:
    store = _state(request).store
    if replay_texts:
        return replay(store, trace_id)
    return trace_dict(get_trace(store, trace_id))


@v1_router.get("/documents/{doc_id:path}/versions", response_model=DocumentVersions, tags=["evidence"], summary="Every version of a document")
def versions(
    doc_id: str,
    request: Request,
    as_of: str | None = Query(None, description="Only the version valid at this ISO-8601 time (with its text)."),
    include_text: bool = Query(False, description="Include each version's full text."),
) -> dict[str, Any]:
    store = _state(request).store
    when = parse_as_of(as_of)
    found = document_versions(store, doc_id, as_of=when)
    with store.session() as session:
        doc = session.get(Document, doc_id)
        current = doc.current_version_id if doc else None
    return {
        "doc_id": doc_id, "as_of": when,
        "versions": [
            DocumentVersionPublic(
                version_id=v.version_id, content_hash=v.content_hash, title=v.title, source_path=v.source_path,
                valid_from=v.valid_from, valid_to=v.valid_to, observed_at=v.observed_at, source_mtime=v.source_mtime,
                indexed_at=v.indexed_at, chunk_count=v.chunk_count, current=v.version_id == current,
                text=v.text if include_text or when is not None else None,
            )
            for v in found
        ],
    }


@ops_router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@ops_router.get("/readyz", summary="Model loaded and stores reachable")
def readyz(request: Request, response: Response) -> dict[str, Any]:
    state = _state(request)
    checks: dict[str, Any] = {}
    ok = True
    try:
        with state.store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
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
    checks["serving"] = state.status()
    checks["calibrator"] = "loaded" if state.calibrator is not None else "none (conservative default)"
    checks["reranker"] = state.reranker_status
    checks["api_keys"] = len(request.app.state.keys)
    if not ok:
        response.status_code = 503
    return {"status": "ready" if ok else "not ready", "checks": checks}


@ops_router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)
