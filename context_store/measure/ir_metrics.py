"""Retrieval and calibration metrics, as BEIR / trec_eval define them.

* ``ndcg_at_k``: graded gain ``rel`` discounted by ``log2(rank + 1)``, divided by the ideal DCG
  of the query's judged documents (trec_eval's ``ndcg_cut``, linear gain, as BEIR reports it).
* ``recall_at_k``: relevant documents in the top k over all relevant documents (``rel > 0``).
* ``mrr_at_k``: 1 / rank of the first relevant document within the top k, else 0.
* ``expected_calibration_error``: equal-width confidence bins; the sample-weighted mean of
  |accuracy − mean confidence| per bin (Guo et al. 2017; Naeini et al. 2015). A confidence
  outside [0, 1] (or NaN) is an error, never clipped: it is not a probability, and clipping
  would hide the bug that produced it. A caller that scores with something else (a raw
  cosine, say) maps it into [0, 1] itself and says so.
* ``coverage_at_precision``: the largest share of items that can be answered, highest score
  first, while precision stays at or above a target; a cut never splits tied scores.
  ``threshold_at_precision`` is the score at that cut (the same rule, as a threshold).
* ``aurc``: area under the risk-coverage curve, the mean error rate over every top-k
  (Geifman & El-Yaniv 2017); lower is better.

Queries without any relevant judgement are skipped by ``evaluate_run``, as BEIR does.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "aurc",
    "coverage_at_precision",
    "evaluate_run",
    "expected_calibration_error",
    "mrr_at_k",
    "ndcg_at_k",
    "recall_at_k",
    "threshold_at_precision",
]

Qrels = Mapping[str, Mapping[str, int]]


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def ndcg_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    _check_k(k)
    gains = sorted((r for r in relevance.values() if r > 0), reverse=True)
    if not gains:
        return 0.0
    dcg = sum(relevance.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(_dedupe(ranked)[:k]) if relevance.get(doc, 0) > 0)
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(gains[:k]))
    return dcg / idcg


def recall_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    _check_k(k)
    relevant = {doc for doc, r in relevance.items() if r > 0}
    if not relevant:
        return 0.0
    return len(relevant.intersection(_dedupe(ranked)[:k])) / len(relevant)


def mrr_at_k(ranked: Sequence[str], relevance: Mapping[str, int], k: int) -> float:
    _check_k(k)
    for rank, doc in enumerate(_dedupe(ranked)[:k], start=1):
        if relevance.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def _dedupe(ranked: Sequence[str]) -> list[str]:
    # A document counted twice would inflate every metric; the first occurrence holds its rank.
    seen: set[str] = set()
    out = []
    for doc in ranked:
        if doc not in seen:
            seen.add(doc)
            out.append(doc)
    return out


def expected_calibration_error(confidences: Sequence[float], outcomes: Sequence[bool | int], bins: int = 10) -> float:
    """ECE of ``confidences`` read as P(outcome), in ``bins`` equal-width bins; every confidence must be in [0, 1]."""
    if len(confidences) != len(outcomes):
        raise ValueError(f"{len(confidences)} confidences but {len(outcomes)} outcomes")
    if bins < 1:
        raise ValueError(f"bins must be at least 1, got {bins}")
    n = len(confidences)
    if n == 0:
        return 0.0
    totals = [0] * bins
    conf_sum = [0.0] * bins
    hits = [0.0] * bins
    for i, (c, y) in enumerate(zip(confidences, outcomes)):
        if not 0.0 <= c <= 1.0:
            raise ValueError(f"confidence {c} (item {i}) is outside [0, 1]; map a score that is not a probability into [0, 1] first")
        b = min(int(c * bins), bins - 1)  # 1.0 falls into the last bin, as in Guo et al.
        totals[b] += 1
        conf_sum[b] += c
        hits[b] += float(bool(y))
    return sum(abs(hits[b] / totals[b] - conf_sum[b] / totals[b]) * totals[b] / n for b in range(bins) if totals[b])


def _sorted_correct(scores: Iterable[float], correct: Iterable[bool]) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(list(scores), float)
    c = np.asarray(list(correct), bool)
    order = np.argsort(-s, kind="stable")
    return s[order], c[order].astype(float)


def _deepest_cut(s: np.ndarray, c: np.ndarray, target: float) -> int | None:
    """Index of the last item of the longest score-descending prefix with precision >= ``target``.

    A threshold cannot split tied scores, so only the last item of a run of ties is a cut.
    """
    cum = np.cumsum(c)
    best = None
    for i in range(len(s)):
        if i + 1 < len(s) and s[i + 1] == s[i]:
            continue
        if cum[i] / (i + 1) >= target:
            best = i
    return best


def coverage_at_precision(scores: Iterable[float], correct: Iterable[bool], target: float) -> float:
    """Largest fraction answerable (score-descending, cutting only between distinct scores) at precision >= target."""
    s, c = _sorted_correct(scores, correct)
    if not len(s):
        return 0.0
    cut = _deepest_cut(s, c, target)
    return 0.0 if cut is None else (cut + 1) / len(s)


def threshold_at_precision(scores: Iterable[float], correct: Iterable[bool], target: float) -> float:
    """The lowest score threshold (answer when score >= it) whose precision on this data reaches ``target``;
    ``inf`` when none does."""
    s, c = _sorted_correct(scores, correct)
    cut = _deepest_cut(s, c, target)
    return float("inf") if cut is None else float(s[cut])


def aurc(scores: Iterable[float], correct: Iterable[bool]) -> float:
    """Area under the risk-coverage curve: mean over k of the error rate among the top-k answered."""
    s, c = _sorted_correct(scores, correct)
    if not len(s):
        return 0.0
    risk = 1.0 - np.cumsum(c) / np.arange(1, len(c) + 1)
    return float(risk.mean())


def evaluate_run(run: Mapping[str, Sequence[str]], qrels: Qrels, ks: Sequence[int] = (10, 100)) -> dict[str, float]:
    """Mean nDCG@k, Recall@k and MRR@k over the judged queries of ``run`` (query -> ranked doc ids)."""
    judged = [q for q, rel in qrels.items() if any(r > 0 for r in rel.values())]
    out: dict[str, float] = {}
    for k in ks:
        for name, fn in (("ndcg", ndcg_at_k), ("recall", recall_at_k), ("mrr", mrr_at_k)):
            values = [fn(run.get(q, []), qrels[q], k) for q in judged]
            out[f"{name}@{k}"] = sum(values) / len(values) if values else 0.0
    out["queries"] = float(len(judged))
    return out
