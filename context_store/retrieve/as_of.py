"""Point-in-time retrieval: "what did the knowledge base say at time T", from SQL alone.

The document versions valid at T, their chunks (a version superseded before it was ever
chunked is chunked now, deterministically) and their cached embeddings are ranked in memory:
cosine over the matrix and ``fusion.bm25_scores`` for the text side, since LanceDB holds only
current rows. User state at T is the snapshot valid then, its facts scored the same way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import numpy as np
from sqlmodel import Session, col, or_, select

from context_store._common import as_utc, sha256, utcnow
from context_store.errors import InvalidRequest
from context_store.index.chunking import chunk_document
from context_store.index.embed.cache import embed_cached
from context_store.index.embed.protocol import Embedder
from context_store.retrieve.features import confidence_features
from context_store.retrieve.filters import matches
from context_store.retrieve.fusion import Candidate, bm25_with_mass, fuse
from context_store.retrieve.fusion_model import FusionModel
from context_store.retrieve.result import RetrievalResult, UserFact, hit_from
from context_store.settings import ChunkingConfig, RetrievalConfig
from context_store.store.database import in_batches
from context_store.store.models import ChunkRecord, Document, DocumentVersion, UserSnapshotVersion

__all__ = ["facts_at", "parse_as_of", "search_as_of", "user_snapshot_at"]


def parse_as_of(value: str | datetime | None, *, now: datetime | None = None) -> datetime | None:
    """ISO-8601 to an aware UTC datetime; naive means UTC; the future is refused."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError as exc:
            raise InvalidRequest(f"as_of {value!r} is not an ISO-8601 date-time (e.g. 2026-03-01T12:00:00Z)") from exc
    try:
        parsed = as_utc(parsed)
    except OverflowError as exc:  # 0001-01-01T00:00+01:00 is before the first representable UTC instant
        raise InvalidRequest(f"as_of {value!r} is outside the range of dates this server can represent") from exc
    if parsed > (now or utcnow()):
        raise InvalidRequest(f"as_of {parsed.isoformat()} is in the future")
    return parsed


def _versions_at(session: Session, when: datetime, filters: dict[str, list[str]]) -> dict[str, tuple[DocumentVersion, Document]]:
    pairs = session.exec(
        select(DocumentVersion, Document)
        .join(Document, col(Document.doc_id) == col(DocumentVersion.doc_id))
        .where(col(DocumentVersion.valid_from) <= when)
        .where(or_(col(DocumentVersion.valid_to).is_(None), col(DocumentVersion.valid_to) > when))
    ).all()
    return {v.version_id: (v, d) for v, d in pairs if matches(filters, d.kind, d.doc_id)}


def _chunks_of(
    session: Session, by_version: dict[str, tuple[DocumentVersion, Document]], chunking: ChunkingConfig
) -> list[ChunkRecord]:
    chunks: list[ChunkRecord] = []
    for ids in in_batches(list(by_version)):
        chunks.extend(session.exec(select(ChunkRecord).where(col(ChunkRecord.version_id).in_(ids))).all())
    chunked = {c.version_id for c in chunks}
    for vid, (version, doc) in by_version.items():
        if vid not in chunked:  # superseded before it was ever chunked: chunk it now, deterministically
            for c in chunk_document(doc.doc_id, version.title, version.text, chunking):
                chunks.append(ChunkRecord(version_id=vid, ordinal=c.ordinal, chunk_id=c.chunk_id, doc_id=doc.doc_id,
                                          chunk_hash=c.chunk_hash, heading=c.heading, text=c.text))
    return chunks


def _candidates(query: str, mode: str, dense: np.ndarray, texts: list[str], depth: int) -> tuple[list[Candidate], float | None]:
    """Candidates keyed by chunk position: the top ``depth`` by cosine and by BM25 (as ``mode`` asks),
    and the most the query could score in BM25 (None in vector mode)."""
    cands: dict[int, Candidate] = {}
    mass = None
    if mode != "text":
        for rank, i in enumerate(np.argsort(-dense)[:depth].tolist(), 1):
            cands[i] = Candidate(str(i), vector_score=float(dense[i]), vector_rank=rank)
    if mode != "vector":
        scores, mass = bm25_with_mass(query, texts)
        text = np.asarray(scores)
        for rank, i in enumerate([i for i in np.argsort(-text)[:depth].tolist() if text[i] > 0], 1):
            cand = cands.setdefault(i, Candidate(str(i), vector_score=float(dense[i])))
            cand.text_score, cand.text_rank = float(text[i]), rank
        if mode == "hybrid":  # learned fusion weighs every candidate's text evidence, as the current path does
            for i, cand in cands.items():
                if cand.text_score is None and text[i] > 0:
                    cand.text_score = float(text[i])
    return list(cands.values()), mass


def _row(chunk: ChunkRecord, version: DocumentVersion, doc: Document) -> dict[str, Any]:
    return {
        "chunk_id": chunk.chunk_id, "doc_id": doc.doc_id, "version_id": version.version_id, "chunk_hash": chunk.chunk_hash,
        "kind": doc.kind, "title": version.title, "heading": chunk.heading, "text": chunk.text,
        "source_path": version.source_path, "source_changed_at": version.source_mtime or version.observed_at,
        "indexed_at": version.indexed_at,
    }


def search_as_of(
    session: Session, embedder: Embedder, result: RetrievalResult, vector: np.ndarray, when: datetime,
    filters: dict[str, list[str]], *, config: RetrievalConfig, chunking: ChunkingConfig, fusion: FusionModel | None = None,
) -> None:
    """Fill ``result`` with the chunks valid at ``when`` that best answer its query."""
    by_version = _versions_at(session, when, filters)
    chunks = _chunks_of(session, by_version, chunking)
    vectors, _ = embed_cached(session, embedder, {c.chunk_hash: c.text for c in chunks}, write=False)
    result.table_versions = {}
    if not chunks:
        return
    dense = np.stack([vectors[c.chunk_hash] for c in chunks]) @ vector
    cands, mass = _candidates(result.query, result.mode, dense, [c.text for c in chunks], config.candidates)
    docs = [chunks[int(c.key)].doc_id for c in cands]
    fused = fuse(result.mode, cands, result.query, config, docs=docs, model=fusion, text_mass=mass)
    rows = {}
    for c in fused[: result.k]:
        chunk = chunks[int(c.key)]
        version, doc = by_version[chunk.version_id]
        rows[c.key] = _row(chunk, version, doc)
        hit = hit_from(rows[c.key], c)
        hit.content_hash, hit.valid_from, hit.valid_to = version.content_hash, version.valid_from, version.valid_to
        result.results.append(hit)
    result.features = confidence_features(fused, rows, result.mode)


def user_snapshot_at(session: Session, user_id: str, when: datetime) -> UserSnapshotVersion | None:
    """The user's snapshot valid at ``when`` (None: they had none then)."""
    return session.exec(
        select(UserSnapshotVersion)
        .where(UserSnapshotVersion.user_id == user_id, col(UserSnapshotVersion.valid_from) <= when)
        .where(or_(col(UserSnapshotVersion.valid_to).is_(None), col(UserSnapshotVersion.valid_to) > when))
    ).first()


def facts_at(session: Session, embedder: Embedder, snapshot: UserSnapshotVersion, vector: np.ndarray) -> list[UserFact]:
    """Every fact of a past snapshot, by similarity to the question (embeddings from the cache)."""
    facts = snapshot.facts or []
    vecs, _ = embed_cached(session, embedder, {sha256(f["text"]): f["text"] for f in facts}, write=False)
    scored = [UserFact(key=f["key"], text=f["text"], score=float(vecs[sha256(f["text"])] @ vector)) for f in facts]
    return sorted(scored, key=lambda f: -f.score)
