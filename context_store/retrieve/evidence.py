"""Per-candidate evidence for learned fusion: what each ranker says about a chunk, and about its document.

One query's candidates (the union of the dense and the full-text top ``n`` chunks) become a
feature matrix, one row per chunk. Every feature is relative to this query's own candidates
(a cosine minus the best cosine, a BM25 score over the best BM25 score), so one set of
weights can serve corpora whose raw score scales differ. Document-level evidence is the
best chunk of the chunk's document and a smoothed sum over all of its candidate chunks: a
long document matching in several places is stronger evidence than one matching chunk.
``fusion_model`` scores the matrix.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cached_property

import numpy as np

__all__ = ["FEATURES", "candidate_features"]

FEATURES = (
    "cos",  # dense cosine
    "cos_gap",  # cosine minus the query's best cosine
    "dense_rank",  # -log2 of the chunk's rank by cosine
    "text_ratio",  # BM25 over the query's best BM25 (0: no term matched)
    "text_rank",  # -log2 of the rank by BM25 (unmatched: one past the last)
    "doc_cos_gap",  # best cosine of the chunk's document minus the query's best
    "doc_cos_soft",  # smoothed sum (log-sum-exp) of the document's cosines minus its best
    "doc_text_max",  # best text_ratio of the document
    "doc_text_sum",  # log(1 + sum of the document's text_ratio)
    "doc_chunks",  # log(1 + the document's chunks among the candidates)
    "rrf",  # reciprocal rank fusion, x60 (1.0 = first in one ranking)
    "agree",  # the chunk is in both rankings' top 10
    "text_peak_x_ratio",  # text_ratio x how much the best BM25 stands out from the 10th
    "dense_margin_x_gap",  # cos_gap x the margin between the two best documents by cosine
)
_SMOOTH = 0.02  # temperature of the document's log-sum-exp over cosines


def _rank(x: np.ndarray) -> np.ndarray:
    r = np.empty(len(x), dtype=np.float64)
    r[np.argsort(-x, kind="stable")] = np.arange(1, len(x) + 1)
    return r


class _Evidence:
    """One query's candidates; each intermediate computed on first use, so a model that names two
    features does not pay for fourteen (the shipped one names ``cos_gap`` and ``text_ratio``:
    the ranks, the document grouping and the log-sum-exp were ~0.15 ms a request for nothing)."""

    def __init__(self, cos: np.ndarray, text: np.ndarray, doc: np.ndarray) -> None:
        self.n = len(cos)
        self.cos = np.asarray(cos, dtype=np.float64)
        self.text = np.asarray(text, dtype=np.float64)
        self.doc = doc
        self.top_cos = self.cos.max()
        self.top_text = self.text.max()

    @cached_property
    def gap(self) -> np.ndarray:
        return self.cos - self.top_cos

    @cached_property
    def text_ratio(self) -> np.ndarray:
        return self.text / self.top_text if self.top_text > 0 else np.zeros(self.n)

    @cached_property
    def dense_rank(self) -> np.ndarray:
        return _rank(self.cos)

    @cached_property
    def text_rank(self) -> np.ndarray:
        return np.where(self.text > 0, _rank(self.text), np.count_nonzero(self.text > 0) + 1)

    @cached_property
    def groups(self) -> tuple[np.ndarray, np.ndarray]:
        """Each document's first candidate, and each candidate's document (0..documents-1)."""
        _, first, inverse = np.unique(self.doc, return_index=True, return_inverse=True)
        return first, inverse

    def by_doc(self, values: np.ndarray, reduce: np.ufunc) -> np.ndarray:
        """Per candidate, ``reduce`` of ``values`` over the candidates of its document."""
        first, inverse = self.groups
        out = np.full(len(first), -np.inf if reduce is np.maximum else 0.0)
        reduce.at(out, inverse, values)
        return out[inverse]

    @cached_property
    def doc_best(self) -> np.ndarray:
        return self.by_doc(self.cos, np.maximum)

    def doc_soft(self) -> np.ndarray:
        return _SMOOTH * np.log(self.by_doc(np.exp((self.cos - self.doc_best) / _SMOOTH), np.add))

    def peak(self) -> float:
        ordered = np.sort(self.text)[::-1]
        return (1.0 - ordered[min(9, self.n - 1)] / self.top_text) if self.top_text > 0 else 0.0

    def margin(self) -> float:
        best_docs = np.sort(self.doc_best[self.groups[0]])[::-1]
        return best_docs[0] - best_docs[1] if len(best_docs) > 1 else 0.0

    def rrf(self) -> np.ndarray:
        return 60.0 / (60.0 + self.dense_rank) + np.where(self.text > 0, 60.0 / (60.0 + self.text_rank), 0.0)


_COLUMNS: dict[str, Callable[[_Evidence], np.ndarray]] = {
    "cos": lambda e: e.cos,
    "cos_gap": lambda e: e.gap,
    "dense_rank": lambda e: -np.log2(e.dense_rank),
    "text_ratio": lambda e: e.text_ratio,
    "text_rank": lambda e: -np.log2(e.text_rank),
    "doc_cos_gap": lambda e: e.doc_best - e.top_cos,
    "doc_cos_soft": lambda e: e.doc_soft(),
    "doc_text_max": lambda e: e.by_doc(e.text_ratio, np.maximum),
    "doc_text_sum": lambda e: np.log1p(e.by_doc(e.text_ratio, np.add)),
    "doc_chunks": lambda e: np.log1p(e.by_doc(np.ones(e.n), np.add)),
    "rrf": lambda e: e.rrf(),
    "agree": lambda e: ((e.dense_rank <= 10) & (e.text_rank <= 10)).astype(np.float64),
    "text_peak_x_ratio": lambda e: e.text_ratio * e.peak(),
    "dense_margin_x_gap": lambda e: e.gap * e.margin(),
}
assert tuple(_COLUMNS) == FEATURES


def candidate_features(cos: np.ndarray, text: np.ndarray, doc: np.ndarray, names: Sequence[str] = FEATURES) -> np.ndarray:
    """(candidates, len(names)) for one query, the columns ``names`` (of ``FEATURES``) in that order;
    ``text`` is 0 where no term matched, ``doc`` a group id per candidate."""
    if len(cos) == 0:
        return np.zeros((0, len(names)))
    evidence = _Evidence(cos, text, doc)
    return np.column_stack([_COLUMNS[name](evidence) for name in names])
