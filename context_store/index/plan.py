"""What an index run has to do, and in which order: pending items, their chunks, waves.

Pending means ``current_version_id != indexed_version_id``. A run loads the pending
documents' current versions and chunks (chunking a version the first time it is indexed),
orders them cheapest first, and cuts them into waves that grow; ``index.documents`` embeds
and commits each wave, ``index.users`` does the same for user snapshots. Under the lineage
lock, ``still_pending`` re-reads which items a run prepared are still pending with the
version it prepared, so concurrent runs never index an item twice nor let an older
version's rows overwrite a newer one's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from sqlmodel import Session, col, or_, select

from context_store.index.chunking import Chunk, chunk_document
from context_store.store.context_store import ContextStore
from context_store.store.database import bulk_update, in_batches, insert_ignore
from context_store.store.models import ChunkRecord, Document, DocumentVersion

__all__ = [
    "FIRST_WAVE_CHUNKS",
    "IndexReport",
    "PendingDocument",
    "ProgressFn",
    "by_embedding_work",
    "cheapest_first",
    "load_pending",
    "pending_clause",
    "pending_doc_keys",
    "pending_documents",
    "still_pending",
    "waves",
]

ProgressFn = Callable[[int], None]
# Chunks to embed in an index run's first wave; each next wave doubles (see ``waves``). One:
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


def pending_clause(current: Any, indexed: Any) -> Any:
    """SQL for "the current version is not the indexed one" (either may be NULL)."""
    return or_(
        current != indexed,
        (current.is_(None) & indexed.is_not(None)),
        (current.is_not(None) & indexed.is_(None)),
    )


def pending_documents(session: Session) -> list[Document]:
    return list(
        session.exec(
            select(Document)
            .where(pending_clause(col(Document.current_version_id), col(Document.indexed_version_id)))
            .order_by(Document.doc_id)
        ).all()
    )


@dataclass
class PendingDocument:
    """One pending document: its current version (``None`` once deleted) and that version's chunks."""

    doc_id: str
    kind: str
    version: DocumentVersion | None  # None: the document was deleted
    chunks: list[Chunk]


def pending_doc_keys(session: Session, doc_ids: Sequence[str] | None = None) -> list[tuple[str, str, str | None]]:
    """``(doc_id, kind, current version)`` of every pending document, or of the pending ones of ``doc_ids``."""
    query = select(Document.doc_id, Document.kind, Document.current_version_id).where(
        pending_clause(col(Document.current_version_id), col(Document.indexed_version_id))
    )
    if doc_ids is None:
        return list(session.exec(query.order_by(Document.doc_id)).all())
    keys = [row for part in in_batches(sorted(set(doc_ids))) for row in session.exec(query.where(col(Document.doc_id).in_(part))).all()]
    return sorted(keys)


def load_pending(session: Session, store: ContextStore, docs: list[tuple[str, str, str | None]]) -> list[PendingDocument]:
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
    pending: list[PendingDocument] = []
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
        pending.append(PendingDocument(doc_id, kind, version, doc_chunks))
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


def by_embedding_work(pending: list[PendingDocument], cached: set[str]) -> list[PendingDocument]:
    """``pending`` in ``cheapest_first`` order of the text each document still has to embed."""
    work = {p.doc_id: sum(len(c.text) for c in p.chunks if c.chunk_hash not in cached) for p in pending}
    by_id = {p.doc_id: p for p in pending}
    return [by_id[doc_id] for doc_id in cheapest_first(work)]


def waves(pending: list[PendingDocument], wave_chunks: int, cached: set[str], first: int) -> Iterable[list[PendingDocument]]:
    """Waves of whole documents holding ``first`` chunks to embed, doubling up to ``wave_chunks``.

    Only chunks the cache lacks count: they are what a wave waits for. Leading documents with
    nothing to embed (deletions, cached texts) commit in a wave of their own, before any
    embedding. Small first waves commit the cheapest documents quickly; a bulk ingest still
    reaches full-size waves (few LanceDB commits) after a handful.
    """
    limit = min(first, wave_chunks)
    queued: set[str] = set()
    wave: list[PendingDocument] = []
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


def still_pending(session: Session, model: Any, key: str, items: list[tuple[str, str | None, T]]) -> list[tuple[str, str | None, T]]:
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
