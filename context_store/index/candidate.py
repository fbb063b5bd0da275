"""The candidate index: a new embedding model or chunker built beside the serving one.

When the configured (model, chunker) differs from the serving deployment (``deployments``),
``build_candidate`` builds the new index in tables suffixed with the new fingerprint
(``company_chunks__<fp>``, ``user_state__<fp>``), from the current versions in SQL.
Embeddings go through the (chunk hash, model) cache, so a new model re-embeds while the old
one keeps its vectors, and a rebuild only embeds what changed. The live tables, and
everything served from them, are untouched. Whether the candidate may serve is the promotion
gate's call (``context_store.measure.gate``).

A chunker change also rewrites the chunk records of *current* versions when the candidate
is promoted (``rechunk_current``: what drift checks and evidence replay read); the records it
replaces are archived, never deleted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, insert
from sqlmodel import Session, col, select

from context_store._common import sha256, utcnow
from context_store.index.chunking import chunk_document
from context_store.index.embed.cache import embed_cached
from context_store.index.embed.protocol import Embedder
from context_store.index.users import fact_id_for
from context_store.settings import ChunkingConfig
from context_store.store.context_store import ContextStore
from context_store.store.database import bulk_update, insert_ignore
from context_store.store.deployments import fingerprint_of, table_names_for
from context_store.store.models import (
    ArchivedChunk,
    ChunkRecord,
    Document,
    DocumentVersion,
    IndexDeployment,
    UserRecord,
    UserSnapshotVersion,
)
from context_store.store.vector_index import VectorIndex

__all__ = ["CandidateBuild", "build_candidate", "candidate_store", "held_versions", "rechunk_current"]


@dataclass
class CandidateBuild:
    fingerprint: str
    store: ContextStore  # the configured settings over the candidate tables
    documents: int = 0
    documents_rebuilt: int = 0
    chunks_embedded: int = 0
    users_rebuilt: int = 0
    seconds: float = 0.0


def _deployment_row(store: ContextStore, fp: str) -> IndexDeployment:
    configured = store.configured
    with store.session() as session:
        row = session.get(IndexDeployment, fp)
        if row is None:
            company, user = table_names_for(fp)
            row = IndexDeployment(fingerprint=fp, model=configured.embedding.model, chunking=configured.chunking.model_dump(),
                                  company_table=company, user_table=user, status="candidate")
        elif row.status != "serving":
            row.status = "candidate"
        session.add(row)
    return row


def candidate_store(store: ContextStore) -> ContextStore:
    """The configured settings over the candidate's tables (they may be empty if never built)."""
    fp = fingerprint_of(store.configured)
    row = _deployment_row(store, fp)
    index = VectorIndex(store.configured.vector_uri, company_table=row.company_table, user_table=row.user_table,
                        storage_options=store.configured.vector_storage_options())
    return ContextStore(store.configured, index=index)


def held_versions(index: VectorIndex, table: str, key: str) -> dict[str, str]:
    """``key`` (doc_id or user_id) -> the version id a LanceDB table holds for it."""
    t = index.table(table)
    if t is None or t.count_rows() == 0:
        return {}
    arrow = t.search().select([key, "version_id"]).limit(t.count_rows()).to_arrow()
    return dict(zip(arrow.column(key).to_pylist(), arrow.column("version_id").to_pylist()))


def _rebuild_documents(
    session: Session, index: VectorIndex, embedder: Embedder, chunking: ChunkingConfig, build: CandidateBuild, group: int,
) -> None:
    """Documents whose current version the candidate does not hold, ``group`` per LanceDB commit; ended ones removed."""
    current = session.exec(
        select(Document.doc_id, Document.kind, DocumentVersion)
        .join(DocumentVersion, col(DocumentVersion.version_id) == col(Document.current_version_id))
        .order_by(Document.doc_id)
    ).all()
    build.documents = len(current)
    held = held_versions(index, index.company_table_name, "doc_id")
    todo = [(d, k, v) for d, k, v in current if held.get(d) != v.version_id]
    gone = sorted(set(held) - {d for d, _, _ in current})
    for start in range(0, max(len(todo), 1 if gone else 0), group):
        part = todo[start : start + group]
        chunks = {d: chunk_document(d, v.title, v.text, chunking) for d, _, v in part}
        vectors, embedded = embed_cached(session, embedder, {c.chunk_hash: c.text for cs in chunks.values() for c in cs})
        build.chunks_embedded += embedded
        now = utcnow()
        rows = [
            {"chunk_id": c.chunk_id, "doc_id": d, "version_id": v.version_id, "chunk_hash": c.chunk_hash, "ordinal": c.ordinal,
             "kind": kind, "title": v.title, "heading": c.heading, "text": c.text, "source_path": v.source_path,
             "source_changed_at": v.source_mtime or v.observed_at, "indexed_at": now, "vector": vectors[c.chunk_hash]}
            for d, kind, v in part for c in chunks[d]
        ]
        doc_ids = [d for d, _, _ in part] + (gone if start == 0 else [])
        index.replace_documents(doc_ids, rows, embedder.dim)
        build.documents_rebuilt += len(part)


def _rebuild_users(session: Session, index: VectorIndex, embedder: Embedder, build: CandidateBuild) -> None:
    """Users whose current snapshot the candidate does not hold, in one commit; users without facts removed."""
    users = session.exec(
        select(UserRecord.user_id, UserSnapshotVersion)
        .join(UserSnapshotVersion, col(UserSnapshotVersion.version_id) == col(UserRecord.current_version_id))
    ).all()
    held = held_versions(index, index.user_table_name, "user_id")
    todo = [(u, v) for u, v in users if held.get(u) != v.version_id and v.facts]
    gone = sorted(set(held) - {u for u, v in users if v.facts})
    if not todo and not gone:
        return
    texts = {c["text"]: c["text"] for _, v in todo for c in v.facts}
    vectors, embedded = embed_cached(session, embedder, {sha256(t): t for t in texts})
    build.chunks_embedded += embedded
    now = utcnow()
    seen: set[str] = set()
    rows = []
    for u, v in todo:
        for fact in v.facts:
            fid = fact_id_for(u, fact["key"], fact["text"])
            if fid in seen:
                continue
            seen.add(fid)
            rows.append({"fact_id": fid, "user_id": u, "version_id": v.version_id, "fact_key": fact["key"], "text": fact["text"],
                         "captured_at": v.captured_at, "indexed_at": now, "vector": vectors[sha256(fact["text"])]})
    index.replace_users([u for u, _ in todo] + gone, rows, embedder.dim)
    build.users_rebuilt = len(todo)


def build_candidate(store: ContextStore, embedder: Embedder, *, group: int = 200) -> CandidateBuild:
    """Bring the candidate tables in line with the current versions in SQL (incremental)."""
    started = time.perf_counter()
    cand = candidate_store(store)
    build = CandidateBuild(fingerprint=fingerprint_of(store.configured), store=cand)
    with store.session() as session:
        _rebuild_documents(session, cand.index, embedder, store.configured.chunking, build, group)
        _rebuild_users(session, cand.index, embedder, build)
    cand.index.optimize()
    with store.session() as session:
        row = session.get(IndexDeployment, build.fingerprint)
        if row is not None:
            row.built_at = utcnow()
            session.add(row)
    build.seconds = time.perf_counter() - started
    return build


def rechunk_current(session: Any, old_fingerprint: str, chunking: ChunkingConfig) -> int:
    """Chunk every current version with ``chunking``; the chunk records it replaces are archived
    (under ``old_fingerprint``; archiving twice, as promote, switch back, promote again does, keeps the first copy)."""
    versions = session.exec(
        select(DocumentVersion).join(Document, col(Document.current_version_id) == col(DocumentVersion.version_id))
    ).all()
    ids = [v.version_id for v in versions]
    old = session.exec(select(ChunkRecord).where(col(ChunkRecord.version_id).in_(ids))).all() if ids else []
    if old:
        insert_ignore(session, ArchivedChunk, [
            {"version_id": c.version_id, "fingerprint": old_fingerprint, "ordinal": c.ordinal, "chunk_id": c.chunk_id, "doc_id": c.doc_id,
             "chunk_hash": c.chunk_hash, "heading": c.heading, "text": c.text, "archived_at": utcnow()} for c in old
        ])
        session.execute(delete(ChunkRecord).where(col(ChunkRecord.version_id).in_(ids)))
    rows, counts = [], []
    for v in versions:
        chunks = chunk_document(v.doc_id, v.title, v.text, chunking)
        rows += [{"version_id": v.version_id, "ordinal": c.ordinal, "chunk_id": c.chunk_id, "doc_id": v.doc_id,
                  "chunk_hash": c.chunk_hash, "heading": c.heading, "text": c.text} for c in chunks]
        counts.append({"version_id": v.version_id, "chunk_count": len(chunks)})
    if rows:
        session.execute(insert(ChunkRecord.__table__), rows)
    bulk_update(session, DocumentVersion, "version_id", counts)
    return len(versions)
