"""Chunk, embed (only what is new) and project pending versions into LanceDB.

Pending means ``current_version_id != indexed_version_id``. Work is done in groups of
documents: embeddings go to the SQL cache first (so a killed run keeps them), then one
LanceDB commit replaces the rows of the whole group, then SQL records what LanceDB now
holds. A crash between the two commits leaves the group pending, and the next run's
identical commit is harmless.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlmodel import Session, col, or_, select

from context_store.chunking import chunk_document
from context_store.database import insert_ignore, lineage_lock
from context_store.embedding import Embedder
from context_store.models import (
    ChunkRecord,
    Document,
    DocumentVersion,
    EmbeddingCacheEntry,
    UserRecord,
    UserSnapshotVersion,
    utcnow,
)
from context_store.sources import sha256
from context_store.store import ContextStore
from context_store.vector_index import COMPANY_TABLE, USER_TABLE

__all__ = [
    "DriftReport",
    "IndexReport",
    "ProgressFn",
    "embed_cached",
    "index_drift",
    "index_pending_documents",
    "index_pending_users",
    "pending_documents",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]
EMBED_GROUP = 2048


@dataclass
class IndexReport:
    items_indexed: int = 0
    items_removed: int = 0
    # pending when this run started, but indexed or superseded by a concurrent run meanwhile
    items_skipped_concurrent: int = 0
    chunks_total: int = 0
    chunks_embedded: int = 0
    chunks_reused: int = 0
    rows_in_table: int = 0
    lancedb_commits: int = 0
    seconds: float = 0.0
    indexed_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DriftReport:
    table: str
    expected: int
    actual: int
    missing: list[str]
    extra: list[str]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra


def _pending_clause(current: Any, indexed: Any) -> Any:
    return or_(
        current != indexed,
        (current.is_(None) & indexed.is_not(None)),
        (current.is_not(None) & indexed.is_(None)),
    )


def pending_documents(session: Session) -> list[Document]:
    return list(
        session.exec(
            select(Document)
            .where(_pending_clause(col(Document.current_version_id), col(Document.indexed_version_id)))
            .order_by(Document.doc_id)
        ).all()
    )


def embed_cached(
    session: Session,
    embedder: Embedder,
    texts_by_hash: dict[str, str],
    *,
    progress: ProgressFn | None = None,
) -> tuple[dict[str, np.ndarray], int]:
    """Vectors for every hash; only hashes the cache lacks for this model are embedded.

    Returns the vectors and how many texts were embedded now.
    """
    vectors: dict[str, np.ndarray] = {}
    hashes = list(texts_by_hash)
    for start in range(0, len(hashes), 900):  # SQLite's bound-parameter limit
        part = hashes[start : start + 900]
        for entry in session.exec(
            select(EmbeddingCacheEntry).where(
                EmbeddingCacheEntry.model == embedder.name, col(EmbeddingCacheEntry.chunk_hash).in_(part)
            )
        ):
            vectors[entry.chunk_hash] = np.frombuffer(entry.vector, dtype=np.float32)
    missing = [h for h in hashes if h not in vectors]
    # Sorting by length keeps each batch's padding minimal, as encode() does within one call.
    missing.sort(key=lambda h: len(texts_by_hash[h]))
    for start in range(0, len(missing), EMBED_GROUP):
        group = missing[start : start + EMBED_GROUP]
        encoded = embedder.encode([texts_by_hash[h] for h in group])
        now = utcnow()
        rows = []
        for h, vec in zip(group, encoded):
            vec = np.asarray(vec, dtype=np.float32)
            vectors[h] = vec
            rows.append({"chunk_hash": h, "model": embedder.name, "dim": int(vec.shape[0]), "vector": vec.tobytes(), "created_at": now})
        # another ingest may have embedded the same text meanwhile: its vector is as good as ours
        insert_ignore(session, EmbeddingCacheEntry, rows)
        session.commit()  # embedding work survives a crash later in the run
        if progress:
            progress(len(group))
    return vectors, len(missing)


def _chunks_for(session: Session, store: ContextStore, doc: Document, version: DocumentVersion) -> list[ChunkRecord]:
    existing = session.exec(
        select(ChunkRecord).where(ChunkRecord.version_id == version.version_id).order_by(ChunkRecord.ordinal)
    ).all()
    if existing:
        return list(existing)
    records = [
        ChunkRecord(
            version_id=version.version_id, ordinal=c.ordinal, chunk_id=c.chunk_id, doc_id=doc.doc_id,
            chunk_hash=c.chunk_hash, heading=c.heading, text=c.text,
        )
        for c in chunk_document(doc.doc_id, version.title, version.text, store.settings.chunking)
    ]
    session.add_all(records)
    version.chunk_count = len(records)
    session.add(version)
    return records


def index_pending_documents(
    store: ContextStore,
    embedder: Embedder,
    *,
    group_size: int = 512,
    progress: Callable[[int, int], ProgressFn] | None = None,
) -> IndexReport:
    """Embed and index every pending document; returns what was embedded versus reused.

    ``progress(total_chunks_to_embed, total_docs)`` may return a callback fed with counts.
    """
    started = time.perf_counter()
    report = IndexReport()
    with store.session() as session:
        # Preparing (chunk records) and committing take the lineage lock; embedding, the slow
        # part, does not, so a second ingest waits seconds, not minutes.
        lineage_lock(session, "company")
        pending = pending_documents(session)
        if not pending:
            session.commit()
            report.rows_in_table = store.index.count(COMPANY_TABLE)
            report.seconds = time.perf_counter() - started
            return report
        work: list[tuple[Document, DocumentVersion | None, list[ChunkRecord]]] = []
        texts: dict[str, str] = {}
        for doc in pending:
            version = session.get(DocumentVersion, doc.current_version_id) if doc.current_version_id else None
            chunks = _chunks_for(session, store, doc, version) if version else []
            work.append((doc, version, chunks))
            for c in chunks:
                texts.setdefault(c.chunk_hash, c.text)
        session.commit()
        report.chunks_total = sum(len(c) for _, _, c in work)
        cached = _cached_hashes(session, embedder.name, texts)
        to_embed = len(texts) - len(cached)
        tick = progress(to_embed, len(work)) if progress else None
        vectors, embedded = embed_cached(session, embedder, texts, progress=tick)
        report.chunks_embedded = embedded
        report.chunks_reused = report.chunks_total - embedded
        dim = int(next(iter(vectors.values())).shape[0]) if vectors else embedder.dim
        for start in range(0, len(work), group_size):
            lineage_lock(session, "company")
            group = _still_pending(session, Document, "doc_id", work[start : start + group_size])
            report.items_skipped_concurrent += min(group_size, len(work) - start) - len(group)
            if not group:
                session.commit()
                continue
            now = utcnow()
            rows = [
                _company_row(doc, version, chunk, vectors[chunk.chunk_hash], now)
                for doc, version, chunks in group
                if version is not None
                for chunk in chunks
            ]
            store.index.replace_documents([doc.doc_id for doc, _, _ in group], rows, dim)
            report.lancedb_commits += 1
            for doc, version, _ in group:
                doc.indexed_version_id = doc.current_version_id
                session.add(doc)
                if version is not None:
                    version.indexed_at = now
                    session.add(version)
                    report.items_indexed += 1
                else:
                    report.items_removed += 1
                report.indexed_ids.append(doc.doc_id)
            session.commit()
    store.index.optimize()
    report.rows_in_table = store.index.count(COMPANY_TABLE)
    report.seconds = time.perf_counter() - started
    log.info(
        "indexed %d documents (%d removed): %d chunks embedded, %d reused",
        report.items_indexed, report.items_removed, report.chunks_embedded, report.chunks_reused,
    )
    return report


def _still_pending(session: Session, model: Any, key: str, items: list[Any]) -> list[Any]:
    """The items whose current version is still the one prepared, and still not indexed.

    Read under the lineage lock: anything another run indexed meanwhile is not applied
    twice, and a version superseded meanwhile never overwrites its successor's rows (the
    successor is pending and the run that made it, or the next one, indexes it).
    """
    ids = [getattr(item[0], key) for item in items]
    fresh: dict[str, tuple[str | None, str | None]] = {}
    for start in range(0, len(ids), 900):
        part = ids[start : start + 900]
        for ident, current, indexed in session.exec(
            select(getattr(model, key), model.current_version_id, model.indexed_version_id).where(col(getattr(model, key)).in_(part))
        ).all():
            fresh[ident] = (current, indexed)
    keep = []
    for item in items:
        current, indexed = fresh.get(getattr(item[0], key), (None, None))
        if current == item[0].current_version_id and current != indexed:
            keep.append(item)
    return keep


def _cached_hashes(session: Session, model: str, texts: dict[str, str]) -> set[str]:
    hashes = list(texts)
    found: set[str] = set()
    for start in range(0, len(hashes), 900):
        found.update(
            session.exec(
                select(EmbeddingCacheEntry.chunk_hash).where(
                    EmbeddingCacheEntry.model == model, col(EmbeddingCacheEntry.chunk_hash).in_(hashes[start : start + 900])
                )
            ).all()
        )
    return found


def _company_row(doc: Document, version: DocumentVersion, chunk: ChunkRecord, vector: np.ndarray, now: Any) -> dict[str, Any]:
    return {
        "chunk_id": chunk.chunk_id,
        "doc_id": doc.doc_id,
        "version_id": version.version_id,
        "chunk_hash": chunk.chunk_hash,
        "ordinal": chunk.ordinal,
        "kind": doc.kind,
        "title": version.title,
        "heading": chunk.heading,
        "text": chunk.text,
        "source_path": version.source_path,
        "source_changed_at": version.source_mtime or version.observed_at,
        "indexed_at": now,
        "vector": vector,
    }


def fact_id_for(user_id: str, fact_key: str, text: str) -> str:
    return f"{user_id}#{fact_key}#{sha256(text)[:12]}"


def index_pending_users(store: ContextStore, embedder: Embedder, *, group_size: int = 256) -> IndexReport:
    started = time.perf_counter()
    report = IndexReport()
    with store.session() as session:
        lineage_lock(session, "user")
        pending = list(
            session.exec(
                select(UserRecord)
                .where(_pending_clause(col(UserRecord.current_version_id), col(UserRecord.indexed_version_id)))
                .order_by(UserRecord.user_id)
            ).all()
        )
        if not pending:
            session.commit()
            report.rows_in_table = store.index.count(USER_TABLE)
            report.seconds = time.perf_counter() - started
            return report
        work: list[tuple[UserRecord, UserSnapshotVersion | None]] = []
        texts: dict[str, str] = {}
        for user in pending:
            version = session.get(UserSnapshotVersion, user.current_version_id) if user.current_version_id else None
            work.append((user, version))
            for fact in version.facts if version else []:
                texts.setdefault(sha256(fact["text"]), fact["text"])
        session.commit()
        report.chunks_total = sum(len(v.facts) for _, v in work if v)
        vectors, embedded = embed_cached(session, embedder, texts)
        report.chunks_embedded = embedded
        report.chunks_reused = report.chunks_total - embedded
        dim = int(next(iter(vectors.values())).shape[0]) if vectors else embedder.dim
        for start in range(0, len(work), group_size):
            lineage_lock(session, "user")
            group = _still_pending(session, UserRecord, "user_id", work[start : start + group_size])
            report.items_skipped_concurrent += min(group_size, len(work) - start) - len(group)
            if not group:
                session.commit()
                continue
            now = utcnow()
            rows = [
                {
                    "fact_id": fact_id_for(user.user_id, fact["key"], fact["text"]),
                    "user_id": user.user_id,
                    "version_id": version.version_id,
                    "fact_key": fact["key"],
                    "text": fact["text"],
                    "captured_at": version.captured_at,
                    "indexed_at": now,
                    "vector": vectors[sha256(fact["text"])],
                }
                for user, version in group
                if version is not None
                for fact in _unique_facts(version.facts)
            ]
            store.index.replace_users([u.user_id for u, _ in group], rows, dim)
            report.lancedb_commits += 1
            for user, version in group:
                user.indexed_version_id = user.current_version_id
                session.add(user)
                if version is not None:
                    version.indexed_at = now
                    session.add(version)
                    report.items_indexed += 1
                else:
                    report.items_removed += 1
                report.indexed_ids.append(user.user_id)
            session.commit()
    report.rows_in_table = store.index.count(USER_TABLE)
    report.seconds = time.perf_counter() - started
    return report


def _unique_facts(facts: Iterable[dict[str, str]]) -> list[dict[str, str]]:
    seen: set[tuple[str, str]] = set()
    out = []
    for fact in facts:
        key = (fact["key"], fact["text"])
        if key not in seen:
            seen.add(key)
            out.append(fact)
    return out


def index_drift(store: ContextStore) -> list[DriftReport]:
    """Compare what SQL says is current with what LanceDB holds, per table."""
    with store.session() as session:
        expected_chunks = set(
            session.exec(
                select(ChunkRecord.chunk_id)
                .join(Document, col(Document.current_version_id) == col(ChunkRecord.version_id))
            ).all()
        )
        # a current version not chunked yet is itself drift: its rows cannot be in LanceDB
        unchunked = session.exec(
            select(Document.doc_id)
            .join(DocumentVersion, col(DocumentVersion.version_id) == col(Document.current_version_id))
            .where(col(DocumentVersion.chunk_count).is_(None))
        ).all()
        expected_facts: set[str] = set()
        for user_id, facts in session.exec(
            select(UserSnapshotVersion.user_id, UserSnapshotVersion.facts)
            .join(UserRecord, col(UserRecord.current_version_id) == col(UserSnapshotVersion.version_id))
        ).all():
            expected_facts.update(fact_id_for(user_id, f["key"], f["text"]) for f in facts)
    reports = []
    actual = store.index.ids(store.index.company_table_name, "chunk_id")
    missing = sorted(expected_chunks - actual) + [f"{doc_id} (not chunked)" for doc_id in unchunked]
    reports.append(DriftReport(COMPANY_TABLE, len(expected_chunks), len(actual), missing, sorted(actual - expected_chunks)))
    actual_facts = store.index.ids(store.index.user_table_name, "fact_id")
    reports.append(
        DriftReport(USER_TABLE, len(expected_facts), len(actual_facts), sorted(expected_facts - actual_facts), sorted(actual_facts - expected_facts))
    )
    return reports
