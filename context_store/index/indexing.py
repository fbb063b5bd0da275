"""Chunk, embed (only what is new) and project pending versions into LanceDB.

Pending means ``current_version_id != indexed_version_id``. Work is done in groups of
documents: embeddings go to the SQL cache first (so a killed run keeps them), then one
LanceDB commit replaces the rows of the whole group, then SQL records what LanceDB now
holds. A crash between the two commits leaves the group pending, and the next run's
identical commit is harmless.

Several ingests may run against one store (two Dagster runs, the warm path and a
reconciliation). Embeddings and chunk records are inserted with ON CONFLICT DO NOTHING, and
each wave is committed under the lineage lock after re-reading which of its documents are
still pending with the version this run prepared: nothing is indexed twice, and an older
version's rows never overwrite a newer one's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import numpy as np
from sqlmodel import Session, col, or_, select

from context_store._common import sha256, utcnow
from context_store.index.chunking import Chunk, chunk_document
from context_store.index.embed.cache import cached_hashes, embed_cached
from context_store.index.embed.protocol import Embedder
from context_store.store.context_store import ContextStore
from context_store.store.database import bulk_update, in_batches, insert_ignore, lineage_lock
from context_store.store.models import ChunkRecord, Document, DocumentVersion, UserRecord, UserSnapshotVersion
from context_store.store.vector_index import COMPANY_TABLE, USER_TABLE

__all__ = [
    "DriftReport",
    "IndexReport",
    "ProgressFn",
    "cheapest_first",
    "index_drift",
    "index_pending_documents",
    "index_pending_users",
    "pending_documents",
]

log = logging.getLogger(__name__)

ProgressFn = Callable[[int], None]
# Chunks to embed in an index run's first wave; each next wave doubles (see ``_waves``). One:
# the cheapest changed document of a many-file change is retrievable after its own chunks.
FIRST_WAVE_CHUNKS = 1
T = TypeVar("T")


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
    """``missing``/``extra`` compare LanceDB with the current versions; ``pending`` lists the
    documents SQL itself records as not yet indexed (current != indexed version)."""

    table: str
    expected: int
    actual: int
    missing: list[str]
    extra: list[str]
    pending: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra

    @property
    def unexplained(self) -> list[str]:
        """Differences not accounted for by a pending document: rows of an indexed document
        that are gone or wrong, or rows of no document at all. A pending document's rows are
        the previous version's until its indexing commit, which is work in progress or left
        for the next run, not drift."""
        pending = set(self.pending)
        return [i for i in [*self.missing, *self.extra] if _owner(i) not in pending]


def _owner(row_id: str) -> str:
    """The document of a drift entry: chunk ids are ``<doc_id>#<hash>[-n]``; ``<doc_id> (not chunked)`` names it."""
    if row_id.endswith(" (not chunked)"):
        return row_id.removesuffix(" (not chunked)")
    return row_id.rsplit("#", 1)[0]


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


@dataclass
class _Pending:
    doc_id: str
    kind: str
    version: DocumentVersion | None  # None: the document was deleted
    chunks: list[Chunk]


def _pending_doc_keys(session: Session, doc_ids: Sequence[str] | None = None) -> list[tuple[str, str, str | None]]:
    query = select(Document.doc_id, Document.kind, Document.current_version_id).where(
        _pending_clause(col(Document.current_version_id), col(Document.indexed_version_id))
    )
    if doc_ids is None:
        return list(session.exec(query.order_by(Document.doc_id)).all())
    keys = [row for part in in_batches(sorted(set(doc_ids))) for row in session.exec(query.where(col(Document.doc_id).in_(part))).all()]
    return sorted(keys)


def _load_pending(session: Session, store: ContextStore, docs: list[tuple[str, str, str | None]]) -> list[_Pending]:
    """These documents' current versions and chunks; versions never chunked are chunked now."""
    version_ids = [vid for _, _, vid in docs if vid]
    versions = {
        v.version_id: v for v in session.exec(select(DocumentVersion).where(col(DocumentVersion.version_id).in_(version_ids)))
    }
    chunks: dict[str, list[Chunk]] = {}
    for vid, ordinal, chunk_id, chunk_hash, heading, text in session.exec(
        select(ChunkRecord.version_id, ChunkRecord.ordinal, ChunkRecord.chunk_id, ChunkRecord.chunk_hash,
               ChunkRecord.heading, ChunkRecord.text).where(col(ChunkRecord.version_id).in_(version_ids))
    ):
        chunks.setdefault(vid, []).append(Chunk(ordinal, chunk_id, chunk_hash, heading, text))
    new_rows: list[dict[str, Any]] = []
    counts: list[dict[str, Any]] = []
    pending: list[_Pending] = []
    for doc_id, kind, vid in docs:
        version = versions.get(vid) if vid else None
        if version is not None and vid not in chunks:
            chunks[vid] = chunk_document(doc_id, version.title, version.text, store.settings.chunking)
            new_rows.extend(
                {"version_id": vid, "ordinal": c.ordinal, "chunk_id": c.chunk_id, "doc_id": doc_id,
                 "chunk_hash": c.chunk_hash, "heading": c.heading, "text": c.text}
                for c in chunks[vid]
            )
            counts.append({"version_id": vid, "chunk_count": len(chunks[vid])})
        doc_chunks = sorted(chunks.get(vid, []), key=lambda c: c.ordinal) if version is not None else []
        pending.append(_Pending(doc_id, kind, version, doc_chunks))
    # a concurrent run may chunk the same version; chunking is deterministic, so theirs = ours
    insert_ignore(session, ChunkRecord, new_rows)
    bulk_update(session, DocumentVersion, "version_id", counts)
    return pending


def cheapest_first(work: dict[str, int]) -> list[str]:
    """Document ids, least text to embed first, then by id: the order an index run takes them in.

    Deletions and fully cached documents lead: in a many-file change most files are then
    retrievable after a fraction of the batch's embedding time.
    """
    return sorted(work, key=lambda doc_id: (work[doc_id], doc_id))


def _by_embedding_work(pending: list[_Pending], cached: set[str]) -> list[_Pending]:
    work = {p.doc_id: sum(len(c.text) for c in p.chunks if c.chunk_hash not in cached) for p in pending}
    by_id = {p.doc_id: p for p in pending}
    return [by_id[doc_id] for doc_id in cheapest_first(work)]


def _waves(pending: list[_Pending], wave_chunks: int, cached: set[str], first: int) -> Iterable[list[_Pending]]:
    """Waves of whole documents holding ``first`` chunks to embed, doubling up to ``wave_chunks``.

    Only chunks the cache lacks count: they are what a wave waits for. Leading documents with
    nothing to embed (deletions, cached texts) commit in a wave of their own, before any
    embedding. Small first waves commit the cheapest documents quickly; a bulk ingest still
    reaches full-size waves (few LanceDB commits) after a handful.
    """
    limit = min(first, wave_chunks)
    queued: set[str] = set()
    wave: list[_Pending] = []
    size = 0
    for p in pending:
        new = {c.chunk_hash for c in p.chunks} - cached - queued
        if new and wave and not queued:
            yield wave  # nothing in it waits for the model
            wave = []
        wave.append(p)
        queued |= new
        size += len(new)
        if size >= limit:
            yield wave
            wave, size = [], 0
            limit = min(limit * 2, wave_chunks)
    if wave:
        yield wave


class _IndexWriter:
    """Commits waves to LanceDB, then records them in SQL, on a thread of its own.

    The model keeps encoding the next wave meanwhile: LanceDB's Rust writer and SQLite
    release the GIL, so the write phase costs almost no wall time on top of embedding.
    """

    def __init__(self, store: ContextStore, report: IndexReport) -> None:
        self.store = store
        self.report = report
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lancedb-writer")
        self.futures: list[Future[None]] = []

    def submit(self, wave: list[_Pending], vectors: dict[str, np.ndarray], dim: int) -> None:
        # Fail fast, and keep at most two waves of vectors in memory.
        while len([f for f in self.futures if not f.done()]) >= 2:
            _wait_first(self.futures)
        for f in self.futures:
            if f.done():
                f.result()
        self.futures.append(self.pool.submit(self._write, wave, {c.chunk_hash: vectors[c.chunk_hash] for p in wave for c in p.chunks}, dim))

    def _write(self, wave: list[_Pending], vectors: dict[str, np.ndarray], dim: int) -> None:
        with self.store.session() as session:
            lineage_lock(session, "company")
            live = _still_pending(session, Document, "doc_id", [(p.doc_id, p.version.version_id if p.version else None, p) for p in wave])
            self.report.items_skipped_concurrent += len(wave) - len(live)
            wave = [p for _, _, p in live]
            if not wave:
                return
            now = utcnow()
            rows = [_company_row(p, c, vectors[c.chunk_hash], now) for p in wave if p.version is not None for c in p.chunks]
            self.store.index.replace_documents([p.doc_id for p in wave], rows, dim)
            # Only now does SQL say LanceDB holds these versions; a crash before this commit
            # leaves them pending and the next run repeats the (idempotent) LanceDB commit.
            bulk_update(
                session, Document, "doc_id",
                [{"doc_id": p.doc_id, "indexed_version_id": p.version.version_id if p.version else None} for p in wave],
            )
            bulk_update(
                session, DocumentVersion, "version_id",
                [{"version_id": p.version.version_id, "indexed_at": now} for p in wave if p.version is not None],
            )
        self.report.lancedb_commits += 1
        for p in wave:
            self.report.items_indexed += p.version is not None
            self.report.items_removed += p.version is None
            self.report.indexed_ids.append(p.doc_id)

    def close(self) -> None:
        try:
            for f in self.futures:
                f.result()
        finally:
            self.pool.shutdown(wait=True)


def _still_pending(session: Session, model: Any, key: str, items: list[tuple[str, str | None, T]]) -> list[tuple[str, str | None, T]]:
    """The ``(id, prepared version, payload)`` items still pending with the prepared version.

    Read under the lineage lock: an item another run indexed meanwhile is not applied twice,
    and a version superseded meanwhile never overwrites its successor's rows (the successor
    is pending, and the run that made it, or the next one, indexes it).
    """
    fresh: dict[str, tuple[str | None, str | None]] = {}
    ident = getattr(model, key)
    for part in in_batches([i for i, _, _ in items]):
        for ident_value, current, indexed in session.exec(
            select(ident, model.current_version_id, model.indexed_version_id).where(col(ident).in_(part))
        ).all():
            fresh[ident_value] = (current, indexed)
    return [
        item for item in items
        if item[0] in fresh and fresh[item[0]][0] == item[1] and fresh[item[0]][0] != fresh[item[0]][1]
    ]


def _wait_first(futures: list[Future[None]]) -> None:
    wait([f for f in futures if not f.done()], return_when=FIRST_COMPLETED)


def index_pending_documents(
    store: ContextStore,
    embedder: Embedder,
    *,
    wave_chunks: int | None = None,
    progress: Callable[[int], ProgressFn] | None = None,
    doc_ids: Sequence[str] | None = None,
    optimize: bool = True,
) -> IndexReport:
    """Chunk, embed and index every pending document (or only the pending ones of ``doc_ids``), wave by wave.

    ``progress(total_documents)`` may return a callback fed with the documents done per wave.
    ``doc_ids`` lets a small writer (the staff-answer warm path in an API process) index its
    own documents without taking on the backlog of an ingest running at the same time.
    ``optimize=False`` leaves compaction and full-text indexing of the new rows to the caller
    (an ingest, or the warm path when idle); the rows are searchable either way.
    """
    started = time.perf_counter()
    report = IndexReport()
    store.ensure_current_deployment()  # never write old-model rows after a promotion
    with store.session() as session:
        keys = _pending_doc_keys(session, doc_ids)
        if not keys:
            report.rows_in_table = store.index.count(COMPANY_TABLE)
            report.seconds = time.perf_counter() - started
            return report
        tick = progress(len(keys)) if progress else None
        writer = _IndexWriter(store, report)
        try:
            for part in in_batches(keys):
                pending = _load_pending(session, store, part)
                session.commit()  # chunk records are kept even if embedding fails below
                cached = cached_hashes(session, embedder.name, (c.chunk_hash for p in pending for c in p.chunks))
                pending = _by_embedding_work(pending, cached)
                for wave in _waves(pending, wave_chunks or store.settings.index_wave_chunks, cached, FIRST_WAVE_CHUNKS):
                    texts = {c.chunk_hash: c.text for p in wave for c in p.chunks}
                    vectors, embedded = embed_cached(session, embedder, texts)
                    report.chunks_total += sum(len(p.chunks) for p in wave)
                    report.chunks_embedded += embedded
                    dim = int(next(iter(vectors.values())).shape[0]) if vectors else embedder.dim
                    writer.submit(wave, vectors, dim)
                    if tick:
                        tick(len(wave))
        finally:
            writer.close()
    report.chunks_reused = report.chunks_total - report.chunks_embedded
    if optimize:
        store.index.optimize()
    report.rows_in_table = store.index.count(COMPANY_TABLE)
    report.seconds = time.perf_counter() - started
    log.info(
        "indexed %d documents (%d removed): %d chunks embedded, %d reused",
        report.items_indexed, report.items_removed, report.chunks_embedded, report.chunks_reused,
    )
    return report


def _company_row(p: _Pending, chunk: Chunk, vector: np.ndarray, now: Any) -> dict[str, Any]:
    version = p.version
    assert version is not None
    return {
        "chunk_id": chunk.chunk_id,
        "doc_id": p.doc_id,
        "version_id": version.version_id,
        "chunk_hash": chunk.chunk_hash,
        "ordinal": chunk.ordinal,
        "kind": p.kind,
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
    store.ensure_current_deployment()
    with store.session() as session:
        lineage_lock(session, "user")  # users are loaded and their facts chunked consistently
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
        session.commit()  # releases the lock: embedding does not need it
        report.chunks_total = sum(len(v.facts) for _, v in work if v)
        vectors, embedded = embed_cached(session, embedder, texts)
        report.chunks_embedded = embedded
        report.chunks_reused = report.chunks_total - embedded
        dim = int(next(iter(vectors.values())).shape[0]) if vectors else embedder.dim
        for start in range(0, len(work), group_size):
            lineage_lock(session, "user")
            part = work[start : start + group_size]
            live = _still_pending(session, UserRecord, "user_id", [(u.user_id, u.current_version_id, (u, v)) for u, v in part])
            report.items_skipped_concurrent += len(part) - len(live)
            group = [pair for _, _, pair in live]
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
        pending_docs = [doc_id for doc_id, _, _ in _pending_doc_keys(session)]
        expected_facts: set[str] = set()
        for user_id, facts in session.exec(
            select(UserSnapshotVersion.user_id, UserSnapshotVersion.facts)
            .join(UserRecord, col(UserRecord.current_version_id) == col(UserSnapshotVersion.version_id))
        ).all():
            expected_facts.update(fact_id_for(user_id, f["key"], f["text"]) for f in facts)
    reports = []
    actual = store.index.ids(store.index.company_table_name, "chunk_id")
    missing = sorted(expected_chunks - actual) + [f"{doc_id} (not chunked)" for doc_id in unchunked]
    reports.append(DriftReport(COMPANY_TABLE, len(expected_chunks), len(actual), missing, sorted(actual - expected_chunks), pending_docs))
    actual_facts = store.index.ids(store.index.user_table_name, "fact_id")
    reports.append(
        DriftReport(USER_TABLE, len(expected_facts), len(actual_facts), sorted(expected_facts - actual_facts), sorted(actual_facts - expected_facts))
    )
    return reports
