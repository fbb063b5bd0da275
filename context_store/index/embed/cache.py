"""The embedding cache: one vector per (chunk hash, model), so the same text is never embedded twice.

Unchanged text, renamed files, re-runs, candidate builds and as-of audits all read it
here. ``embed_cached`` fills what is missing and commits each group, so embedding work
survives a crash later in the run; with ``write=False`` (a read-only audit) the missing
texts are embedded but not stored.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from sqlmodel import Session, col, select

from context_store._common import utcnow
from context_store.index.embed.protocol import Embedder
from context_store.store.database import in_batches, insert_ignore
from context_store.store.models import EmbeddingCacheEntry

__all__ = ["EMBED_GROUP", "cached_hashes", "cached_vectors", "embed_cached"]

# Texts per encode call and per commit of new cache rows.
EMBED_GROUP = 2048


def cached_vectors(session: Session, model: str, hashes: Iterable[str]) -> dict[str, np.ndarray]:
    """The cached vectors of ``model`` for those of ``hashes`` the cache holds."""
    vectors: dict[str, np.ndarray] = {}
    for part in in_batches(sorted(set(hashes))):
        for entry in session.exec(
            select(EmbeddingCacheEntry).where(EmbeddingCacheEntry.model == model, col(EmbeddingCacheEntry.chunk_hash).in_(part))
        ):
            vectors[entry.chunk_hash] = np.frombuffer(entry.vector, dtype=np.float32)
    return vectors


def cached_hashes(session: Session, model: str, hashes: Iterable[str]) -> set[str]:
    """Which of ``hashes`` the cache holds for ``model`` (no vectors loaded)."""
    found: set[str] = set()
    for part in in_batches(sorted(set(hashes))):
        found.update(
            session.exec(
                select(EmbeddingCacheEntry.chunk_hash).where(EmbeddingCacheEntry.model == model, col(EmbeddingCacheEntry.chunk_hash).in_(part))
            ).all()
        )
    return found


def embed_cached(
    session: Session, embedder: Embedder, texts_by_hash: dict[str, str], *, write: bool = True
) -> tuple[dict[str, np.ndarray], int]:
    """Vectors for every hash; only hashes the cache lacks for this model are embedded.

    Returns the vectors and how many texts were embedded now.
    """
    vectors = cached_vectors(session, embedder.name, texts_by_hash)
    missing = [h for h in texts_by_hash if h not in vectors]
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
        if write:
            # another ingest may have embedded the same text meanwhile: its vector is as good as ours
            insert_ignore(session, EmbeddingCacheEntry, rows)
            session.commit()  # embedding work survives a crash later in the run
    return vectors, len(missing)
