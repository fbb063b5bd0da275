"""One request's candidates as columns (``Pool``), and one candidate as an object (``Candidate``).

A request weighs about 200 candidates (the union of the dense and the full-text top ``n``)
and serves ten. Fusion and the confidence features read every candidate's scores and ranks,
so they read them as arrays; a ``Candidate`` object is made only for what is served, or for
callers that hand in a list (point-in-time retrieval, training, tests). Building an object
and a row reference per candidate was ~0.6 ms of a request's CPU at 100k chunks (retrieval
after encoding measured 3.03 -> 2.47 ms when this replaced it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Candidate", "Pool", "Ranked", "Rows", "codes", "merge", "sort_scored"]


@dataclass
class Candidate:
    key: str  # chunk id
    vector_score: float | None = None  # cosine similarity
    text_score: float | None = None  # BM25 (None: not in the text ranking)
    vector_rank: int | None = None  # 1-based
    text_rank: int | None = None
    score: float = 0.0


@dataclass
class Pool:
    """Candidates in the order the rankers found them (dense by rank, then text-only ones by text rank)."""

    cos: np.ndarray  # float64; nan: not scored on the dense side
    text: np.ndarray  # float64; nan: no text score
    vector_rank: np.ndarray  # int64, 1-based; 0: not in the dense ranking
    text_rank: np.ndarray  # int64, 1-based; 0: not in the text ranking
    doc: np.ndarray  # int64 document codes: evidence only groups by them, so any one-to-one coding serves

    def __len__(self) -> int:
        return len(self.cos)

    @classmethod
    def of(cls, candidates: Sequence[Candidate], docs: Sequence[str]) -> Pool:
        """The columns of a list of candidates and their documents."""
        return cls(
            cos=np.array([np.nan if c.vector_score is None else c.vector_score for c in candidates], dtype=np.float64),
            text=np.array([np.nan if c.text_score is None else c.text_score for c in candidates], dtype=np.float64),
            vector_rank=np.array([c.vector_rank or 0 for c in candidates], dtype=np.int64),
            text_rank=np.array([c.text_rank or 0 for c in candidates], dtype=np.int64),
            doc=codes(docs),
        )

    def candidate(self, i: int, key: str, score: float = 0.0) -> Candidate:
        """Candidate ``i`` as an object; ``key``: its chunk id."""
        cos, text = float(self.cos[i]), float(self.text[i])
        vector_rank, text_rank = int(self.vector_rank[i]), int(self.text_rank[i])
        return Candidate(
            key, vector_score=None if math.isnan(cos) else cos, text_score=None if math.isnan(text) else text,
            vector_rank=vector_rank or None, text_rank=text_rank or None, score=float(score),
        )


def sort_scored(candidates: Sequence[Candidate], scores: np.ndarray, order: np.ndarray | None = None) -> list[Candidate]:
    """``candidates`` with ``score`` set from ``scores``, in ``order`` (default: best score first, ties
    in the given order): how a ranking of a pool is handed back to callers holding a list."""
    for c, s in zip(candidates, scores.tolist()):
        c.score = s
    if order is None:
        order = np.argsort(-scores, kind="stable")
    return [candidates[i] for i in order.tolist()]


def codes(values: Sequence[str]) -> np.ndarray:
    """One int64 code per distinct value, in order of first appearance."""
    seen: dict[str, int] = {}
    return np.fromiter((seen.setdefault(str(v), len(seen)) for v in values), dtype=np.int64, count=len(values))


@dataclass
class Ranked:
    """One ranker's answer, best first: which rows, their scores, and where each row lives (a row
    number of the request's snapshot; -1: a row LanceDB returned, held in ``fetched`` by position).

    ``ids`` tell rows apart within one request: the snapshot row number where the row is the
    snapshot's, else the chunk id (a row LanceDB returned is one the snapshot lacks). Row numbers
    spare reading ~200 chunk ids out of the snapshot's 100k-string column per request (each a
    cache miss); only served chunks' ids are read."""

    ids: list[Any]
    scores: np.ndarray  # float64
    rows: np.ndarray  # int64
    fetched: dict[int, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of_rows(cls, found: list[dict[str, Any]], scores: Sequence[float]) -> Ranked:
        """Rows LanceDB returned whole, best first."""
        return cls([r["chunk_id"] for r in found], np.asarray(scores, dtype=np.float64).reshape(-1),
                   np.full(len(found), -1, dtype=np.int64), dict(enumerate(found)))


class Rows:
    """Where each candidate of a pool has its row: a row of ``snap`` or a row LanceDB returned.
    Snapshot rows become dicts only when served (of ~200 candidates a request serves ten)."""

    def __init__(self, snap: Any, rows: np.ndarray, fetched: dict[int, dict[str, Any]]) -> None:
        self.snap = snap  # dense_index.Snapshot or None
        self.rows = rows
        self.fetched = fetched

    def value(self, i: int, column: str) -> Any:
        r = int(self.rows[i])
        return self.snap.meta[column][r] if r >= 0 else self.fetched[i].get(column)

    def row(self, i: int) -> dict[str, Any]:
        r = int(self.rows[i])
        return self.snap.row(r) if r >= 0 else self.fetched[i]

    def vectors(self, idx: np.ndarray) -> np.ndarray:
        rows = self.rows[idx]
        if self.snap is not None and bool((rows >= 0).all()):
            return self.snap.vectors[rows]
        return np.asarray([self.snap.vectors[r] if r >= 0 else self.fetched[i]["vector"]
                           for i, r in zip(idx.tolist(), rows.tolist())], dtype=np.float32)

    def doc_codes(self) -> np.ndarray:
        codes_of_rows = getattr(self.snap, "doc_codes", None)
        if codes_of_rows is not None and bool((self.rows >= 0).all()):
            return codes_of_rows[self.rows]
        return codes([self.value(i, "doc_id") for i in range(len(self.rows))])


def merge(dense: Ranked | None, text: Ranked | None, snap: Any) -> tuple[Pool, Rows, np.ndarray]:
    """The union of two rankings as a pool (dense candidates first, then text-only ones), where each
    candidate's row lives, and the positions of the text-only candidates (their cosine is still nan)."""
    n_dense = len(dense.ids) if dense is not None else 0
    at = dict(zip(dense.ids, range(n_dense))) if dense is not None else {}
    where = np.zeros(len(text.ids) if text is not None else 0, dtype=np.int64)
    extra: list[int] = []  # text hits the dense ranking does not hold, by text rank
    for j, key in enumerate(text.ids if text is not None else ()):
        i = at.get(key)
        if i is None:
            i = at[key] = n_dense + len(extra)
            extra.append(j)
        where[j] = i
    size = n_dense + len(extra)
    cos, text_col = np.full(size, np.nan), np.full(size, np.nan)
    vector_rank, text_rank = np.zeros(size, dtype=np.int64), np.zeros(size, dtype=np.int64)
    rows = np.full(size, -1, dtype=np.int64)
    fetched: dict[int, dict[str, Any]] = {}
    if dense is not None:
        cos[:n_dense], vector_rank[:n_dense], rows[:n_dense] = dense.scores, np.arange(1, n_dense + 1), dense.rows
        fetched.update(dense.fetched)
    if text is not None:
        text_col[where], text_rank[where] = text.scores, np.arange(1, len(text.ids) + 1)
        rows[n_dense:] = text.rows[np.asarray(extra, dtype=np.int64)]
        fetched.update({n_dense + e: text.fetched[j] for e, j in enumerate(extra) if j in text.fetched})
    located = Rows(snap, rows, fetched)
    pool = Pool(cos, text_col, vector_rank, text_rank, located.doc_codes())
    return pool, located, np.arange(n_dense, size, dtype=np.int64)
