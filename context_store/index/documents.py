"""Chunk, embed (only what is new) and project pending document versions into LanceDB.

Work is done in groups of documents (``index.plan`` says which, and in what order):
embeddings go to the SQL cache first (so a killed run keeps them), then one LanceDB commit
replaces the rows of a whole wave, then SQL records what LanceDB now holds. A crash between
the two commits leaves the wave pending, and the next run's identical commit is harmless.

Several ingests may run against one store (two Dagster runs, the warm path and a
reconciliation). Embeddings and chunk records are inserted with ON CONFLICT DO NOTHING, and
each wave is committed under the lineage lock after re-reading which of its documents are
still pending with the version this run prepared: nothing is indexed twice, and an older
version's rows never overwrite a newer one's.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np

from context_store._common import utcnow
from context_store.index.chunking import Chunk
from context_store.index.embed.cache import cached_hashes, embed_cached
from context_store.index.embed.protocol import Embedder
from context_store.index.plan import (
    FIRST_WAVE_CHUNKS,
    IndexReport,
    PendingDocument,
    ProgressFn,
    by_embedding_work,
    load_pending,
    pending_doc_keys,
    still_pending,
    waves,
)
from context_store.store.context_store import ContextStore
from context_store.store.database import bulk_update, in_batches, lineage_lock
from context_store.store.models import Document, DocumentVersion
from context_store.store.vector_index import COMPANY_TABLE

__all__ = ["index_pending_documents"]

log = logging.getLogger(__name__)


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

    def submit(self, wave: list[PendingDocument], vectors: dict[str, np.ndarray], dim: int) -> None:
        # Fail fast, and keep at most two waves of vectors in memory.
        while len([f for f in self.futures if not f.done()]) >= 2:
            _wait_first(self.futures)
        for f in self.futures:
            if f.done():
                f.result()
        self.futures.append(self.pool.submit(self._write, wave, {c.chunk_hash: vectors[c.chunk_hash] for p in wave for c in p.chunks}, dim))

    def _write(self, wave: list[PendingDocument], vectors: dict[str, np.ndarray], dim: int) -> None:
        with self.store.session() as session:
            lineage_lock(session, "company")
            live = still_pending(session, Document, "doc_id", [(p.doc_id, p.version.version_id if p.version else None, p) for p in wave])
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
        keys = pending_doc_keys(session, doc_ids)
        if not keys:
            report.rows_in_table = store.index.count(COMPANY_TABLE)
            report.seconds = time.perf_counter() - started
            return report
        tick = progress(len(keys)) if progress else None
        writer = _IndexWriter(store, report)
        try:
            for part in in_batches(keys):
                pending = load_pending(session, store, part)
                session.commit()  # chunk records are kept even if embedding fails below
                cached = cached_hashes(session, embedder.name, (c.chunk_hash for p in pending for c in p.chunks))
                pending = by_embedding_work(pending, cached)
                for wave in waves(pending, wave_chunks or store.settings.index_wave_chunks, cached, FIRST_WAVE_CHUNKS):
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


def _company_row(p: PendingDocument, chunk: Chunk, vector: np.ndarray, now: Any) -> dict[str, Any]:
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
