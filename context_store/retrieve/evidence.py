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


def _by_doc(values: np.ndarray, inverse: np.ndarray, groups: int, reduce: np.ufunc) -> np.ndarray:
    """Per candidate, ``reduce`` of ``values`` over the candidates of its document (``inverse``: its group)."""
    out = np.full(groups, -np.inf if reduce is np.maximum else 0.0)
    reduce.at(out, inverse, values)
    return out[inverse]


def candidate_features(cos: np.ndarray, text: np.ndarray, doc: np.ndarray) -> np.ndarray:
    """(candidates, len(FEATURES)) for one query; ``text`` is 0 where no term matched, ``doc`` a group id per candidate."""
    n = len(cos)
    if n == 0:
        return np.zeros((0, len(FEATURES)))
    cos = np.asarray(cos, dtype=np.float64)
    text = np.asarray(text, dtype=np.float64)
    top_cos = cos.max()
    top_text = text.max()
    text_ratio = text / top_text if top_text > 0 else np.zeros(n)
    dense_rank = _rank(cos)
    text_rank = np.where(text > 0, _rank(text), np.count_nonzero(text > 0) + 1)
    gap = cos - top_cos
    # one grouping for every document-level column (np.unique sorts: once, not six times)
    _, first, inverse = np.unique(doc, return_index=True, return_inverse=True)
    groups = len(first)
    doc_best = _by_doc(cos, inverse, groups, np.maximum)
    doc_soft = _SMOOTH * np.log(_by_doc(np.exp((cos - doc_best) / _SMOOTH), inverse, groups, np.add))
    ordered = np.sort(text)[::-1]
    peak = (1.0 - ordered[min(9, n - 1)] / top_text) if top_text > 0 else 0.0
    best_docs = np.sort(doc_best[first])[::-1]
    margin = best_docs[0] - best_docs[1] if len(best_docs) > 1 else 0.0
    rrf = 60.0 / (60.0 + dense_rank) + np.where(text > 0, 60.0 / (60.0 + text_rank), 0.0)
    columns = [
        cos, gap, -np.log2(dense_rank), text_ratio, -np.log2(text_rank),
        doc_best - top_cos, doc_soft, _by_doc(text_ratio, inverse, groups, np.maximum),
        np.log1p(_by_doc(text_ratio, inverse, groups, np.add)), np.log1p(_by_doc(np.ones(n), inverse, groups, np.add)), rrf,
        ((dense_rank <= 10) & (text_rank <= 10)).astype(np.float64), text_ratio * peak, gap * margin,
    ]
    return np.column_stack(columns)
