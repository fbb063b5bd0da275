"""What a retrieval request returns: ranked chunks (``Hit``), the user's facts (``UserFact``)
and the whole answer with its evidence (``RetrievalResult``: table versions, filters, timings,
the confidence features)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from context_store._common import utcnow
from context_store.retrieve.fusion import Candidate

__all__ = ["Hit", "RetrievalResult", "UserFact", "hit_from"]


@dataclass
class Hit:
    chunk_id: str
    doc_id: str
    version_id: str
    title: str
    heading: str
    text: str
    source_path: str
    kind: str
    score: float
    source_changed_at: datetime | None
    indexed_at: datetime | None
    chunk_hash: str = ""
    content_hash: str = ""  # of the document version
    vector_score: float | None = None
    text_score: float | None = None
    vector_rank: int | None = None
    text_rank: int | None = None
    valid_from: datetime | None = None
    valid_to: datetime | None = None  # set: this version was superseded then (as_of results)


@dataclass
class UserFact:
    key: str
    text: str
    score: float


@dataclass
class RetrievalResult:
    query: str
    results: list[Hit]
    user_id: str | None = None
    user_version_id: str | None = None
    user_captured_at: datetime | None = None
    user_state: list[UserFact] = field(default_factory=list)
    dropped_superseded: int = 0
    served_at: datetime = field(default_factory=utcnow)
    mode: str = "vector"
    k: int = 5
    as_of: datetime | None = None
    filters: dict[str, list[str]] = field(default_factory=dict)
    model: str = ""
    table_versions: dict[str, int | None] = field(default_factory=dict)
    dense_snapshot_version: int | None = None
    features: dict[str, float] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)
    reranked: bool = False
    # the question's embedding, for the routing signals that compare it (None: not embedded, or as_of)
    query_vector: Any = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def hit_from(row: Mapping[str, Any], c: Candidate) -> Hit:
    """A chunk row (LanceDB, snapshot or SQL) and its fused candidate as one ``Hit``."""
    return Hit(
        chunk_id=row["chunk_id"], doc_id=row["doc_id"], version_id=row["version_id"], title=row["title"],
        heading=row["heading"], text=row["text"], source_path=row["source_path"], kind=row["kind"], score=float(c.score),
        source_changed_at=row.get("source_changed_at"), indexed_at=row.get("indexed_at"), chunk_hash=row.get("chunk_hash", ""),
        vector_score=c.vector_score, text_score=c.text_score, vector_rank=c.vector_rank, text_rank=c.text_rank,
    )
