"""Evidence trails: one row per retrieval response, and the means to read and replay it.

A trace records the question, every served chunk (document, version, chunk id, chunk
hash, version content hash, scores and ranks), the user's snapshot version and facts, the
LanceDB table versions read, the model, the threshold, the confidence and its features,
and the decision with its reasons. ``replay`` rebuilds the served texts from the versioned
SQL store and checks every hash, so an audit months later sees exactly what the agent saw.

A trace holds the asker's question and user facts, so it is read by the key that made it
(``client``: the key's name) or by staff; ``get_trace(..., client=name)`` answers "no such
trace" for anyone else's, the same answer as for an id that never existed.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from context_store._common import utcnow
from context_store.errors import StoreError, UnknownTrace
from context_store.retrieve.result import RetrievalResult
from context_store.route.decision import Decision
from context_store.route.recording import Writes, writes_scope
from context_store.store.context_store import ContextStore
from context_store.store.models import ArchivedChunk, ChunkRecord, DocumentVersion, RetrievalTrace, UserSnapshotVersion

__all__ = ["get_trace", "latest_trace", "new_trace_id", "record_trace", "replay", "served_context", "trace_dict"]


_TRACES = RetrievalTrace.__table__  # type: ignore[attr-defined]


def new_trace_id() -> str:
    return "tr-" + uuid.uuid4().hex


def _iso(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def record_trace(
    store: ContextStore,
    result: RetrievalResult,
    decision: Decision,
    *,
    confidence_source: str,
    trace_id: str | None = None,
    latency_ms: float | None = None,
    client: str | None = None,
    conversation_id: str | None = None,
    history: list[dict[str, Any]] | None = None,
    session: Session | Writes | None = None,
) -> str:
    """Store the evidence trail of one response (in the caller's transaction when ``session`` is given).

    ``history`` is the turns the agent sent with the question (already checked by ``route.transcript``)."""
    trace_id = trace_id or new_trace_id()
    row = {
        "trace_id": trace_id,
        "created_at": result.served_at,
        "query": result.query,
        "user_id": result.user_id,
        "user_version_id": result.user_version_id,
        "k": result.k,
        "mode": result.mode,
        "as_of": result.as_of,
        "filters": result.filters or None,
        "model": result.model,
        "table_versions": result.table_versions,
        "dense_snapshot_version": result.dense_snapshot_version,
        "confidence": decision.confidence,
        "confidence_source": confidence_source,
        "threshold": decision.threshold,
        "features": result.features,
        "decision": decision.decision,
        "reasons": [r.as_dict() for r in decision.reasons],
        "results": [
            {
                "rank": rank, "chunk_id": h.chunk_id, "doc_id": h.doc_id, "version_id": h.version_id,
                "chunk_hash": h.chunk_hash, "content_hash": h.content_hash, "score": h.score,
                "vector_score": h.vector_score, "text_score": h.text_score, "vector_rank": h.vector_rank, "text_rank": h.text_rank,
                "source_changed_at": _iso(h.source_changed_at), "indexed_at": _iso(h.indexed_at),
                "valid_to": _iso(h.valid_to),
            }
            for rank, h in enumerate(result.results, 1)
        ],
        "user_facts": [asdict(f) for f in result.user_state] if result.user_id else None,
        "latency_ms": latency_ms,
        "client": client,
        "conversation_id": conversation_id,
        "history": history or None,
    }
    # A Core row, no ORM identity map: this runs on every request (``respond()`` writes a batch's traces in one statement).
    with writes_scope(store.engine, session) as writes:
        writes.add(_TRACES, row)
    return trace_id


def get_trace(store: ContextStore, trace_id: str, *, client: str | None = None) -> RetrievalTrace:
    """The trace ``trace_id``; with ``client``, only if that key recorded it (anyone else's is NotFound)."""
    with store.session() as session:
        trace = session.get(RetrievalTrace, trace_id)
    if trace is None or (client is not None and trace.client != client):
        raise UnknownTrace(f"no trace {trace_id!r} recorded by this key")
    return trace


def latest_trace(session: Session, conversation_id: str) -> RetrievalTrace | None:
    """The conversation's last recorded response (what the agent last told the user), if any."""
    return session.exec(
        select(RetrievalTrace).where(RetrievalTrace.conversation_id == conversation_id)
        .order_by(col(RetrievalTrace.created_at).desc()).limit(1)
    ).first()


def trace_dict(trace: RetrievalTrace) -> dict[str, Any]:
    return {k: _iso(v) for k, v in trace.model_dump().items()}


def replay(store: ContextStore, trace_id: str, *, client: str | None = None) -> dict[str, Any]:
    """The served evidence rebuilt from SQL: each chunk's text, verified against the recorded hashes."""
    trace = get_trace(store, trace_id, client=client)
    served = trace.results or []
    with store.session() as session:
        version_ids = {r["version_id"] for r in served}
        versions = {
            v.version_id: v for v in session.exec(select(DocumentVersion).where(col(DocumentVersion.version_id).in_(version_ids)))
        } if version_ids else {}
        chunks = {
            (c.version_id, c.chunk_id): c
            for c in session.exec(select(ChunkRecord).where(col(ChunkRecord.version_id).in_(version_ids)))
        } if version_ids else {}
        if any((r["version_id"], r["chunk_id"]) not in chunks for r in served):
            # chunks a chunker promotion replaced are archived, not deleted (context_store/index/candidate.py)
            for c in session.exec(select(ArchivedChunk).where(col(ArchivedChunk.version_id).in_(version_ids))):
                chunks.setdefault((c.version_id, c.chunk_id), c)  # type: ignore[arg-type]
        snapshot = session.get(UserSnapshotVersion, trace.user_version_id) if trace.user_version_id else None
    out = []
    for r in served:
        version = versions.get(r["version_id"])
        chunk = chunks.get((r["version_id"], r["chunk_id"]))
        if version is None or chunk is None:
            raise StoreError(f"trace {trace_id}: version {r['version_id']} / chunk {r['chunk_id']} is no longer in the store")
        verified = version.content_hash == r["content_hash"] and chunk.chunk_hash == r["chunk_hash"]
        out.append({
            **r, "title": version.title, "heading": chunk.heading, "text": chunk.text, "source_path": version.source_path,
            "valid_from": _iso(version.valid_from), "valid_to_now": _iso(version.valid_to), "verified": verified,
        })
    return {
        "trace_id": trace.trace_id, "query": trace.query, "served_at": _iso(trace.created_at), "mode": trace.mode, "k": trace.k,
        "as_of": _iso(trace.as_of), "model": trace.model, "table_versions": trace.table_versions,
        "decision": trace.decision, "reasons": trace.reasons, "confidence": trace.confidence, "threshold": trace.threshold,
        "results": out, "user_id": trace.user_id, "user_version_id": trace.user_version_id,
        "user_facts": trace.user_facts, "user_snapshot_facts": snapshot.facts if snapshot else None,
        "verified": all(r["verified"] for r in out),
        "replayed_at": _iso(utcnow()),
    }


def served_context(store: ContextStore, trace: RetrievalTrace | None) -> list[dict[str, Any]]:
    """What a response served, texts rebuilt from the versioned store: the working memory of a hand-off or a review.

    A chunk a promotion archived away still names its document version (its text is ``None``), so the person can look it up.
    """
    if trace is None:
        return []
    try:
        served = replay(store, trace.trace_id)["results"]
    except StoreError:
        served = [{**r, "text": None} for r in trace.results or []]
    keys = ("chunk_id", "doc_id", "version_id", "title", "heading", "text", "score", "source_path", "source_changed_at")
    return [{k: r.get(k) for k in keys} for r in served]
