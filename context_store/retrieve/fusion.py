"""Combining a dense and a full-text ranking into one.

``rrf`` (reciprocal rank fusion) throws the scores away: on StackFAQ, where dense search is
nearly perfect (nDCG@10 0.95) and BM25 is weak, it drags the fused ranking down to ~0.88,
because a weak text ranking gets as many votes as a strong one. The default, ``hybrid``, is
learned fusion (``fusion_model``): a linear model over per-candidate evidence (``evidence``),
fitted across every open labelled set and validated on sets it was not fitted on. It replaced
a hand-set rule (cosine plus 0.06 or 0.4 x normalised BM25 by query length) whose weights were
chosen on the two sets it was reported on, and which fell below RRF on a held-out set. Its
text evidence counts as far as the query's best text match covers the query (the best BM25
over ``text_mass``, the most the query could score: ``fusion_model``'s coverage gate).

``bm25_scores`` is a small in-memory BM25 (k1=0.9, b=0.4, as BEIR's baselines) used where
neither the snapshot's text index nor LanceDB's can answer: point-in-time (``as_of``)
retrieval over the versions valid at a past moment.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from context_store.retrieve.fusion_model import FusionModel, learned_scores, load_fusion_model
from context_store.retrieve.pool import Candidate, Pool, sort_scored
from context_store.settings import RetrievalConfig

__all__ = ["Candidate", "bm25_scores", "bm25_with_mass", "fuse", "rank", "rrf", "tokenize"]

RRF_K = 60


def _rrf_scores(pool: Pool, k: int = RRF_K) -> np.ndarray:
    # a missing rank adds 0.0, so each sum is the one Python's sum() of the present terms gives
    return (np.where(pool.vector_rank > 0, 1.0 / (k + pool.vector_rank), 0.0)
            + np.where(pool.text_rank > 0, 1.0 / (k + pool.text_rank), 0.0))


def rank(mode: str, pool: Pool, *, model: FusionModel | None = None, text_mass: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The pool ranked as ``mode`` asks (``vector``, ``text``, ``rrf`` or ``hybrid``): candidate positions
    best first (ties keep the pool's order), and every candidate's score. ``text_mass``: the most the
    query could score on the text side (``TermIndex.query_mass``; None: unknown)."""
    if mode == "vector":
        scores = np.nan_to_num(pool.cos, nan=0.0)
    elif mode == "text":
        scores = np.nan_to_num(pool.text, nan=0.0)
    elif mode == "rrf":
        scores = _rrf_scores(pool)
    else:
        scores = learned_scores(pool, model or load_fusion_model(), text_mass)
    return np.argsort(-scores, kind="stable"), scores


def rrf(candidates: list[Candidate], k: int = RRF_K) -> list[Candidate]:
    return sort_scored(candidates, _rrf_scores(Pool.of(candidates, [c.key for c in candidates]), k))


def fuse(
    mode: str, candidates: list[Candidate], query: str, config: RetrievalConfig, *,
    docs: Sequence[str] | None = None, model: FusionModel | None = None, text_mass: float | None = None,
) -> list[Candidate]:
    """``rank`` for a list of candidates (their ``score`` set), best first; ``docs`` holds each
    candidate's document (hybrid weighs document-level evidence)."""
    pool = Pool.of(candidates, docs if docs is not None else [c.key for c in candidates])
    order, scores = rank(mode, pool, model=model, text_mass=text_mass)
    return sort_scored(candidates, scores, order)


_TOKEN = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be by for from has have how i if in is it its of on or that the this to was what when where which who why will with you your do does can my me".split()
)


def tokenize(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


def bm25_scores(query: str, documents: Sequence[str], *, k1: float = 0.9, b: float = 0.4) -> list[float]:
    return bm25_with_mass(query, documents, k1=k1, b=b)[0]


def bm25_with_mass(query: str, documents: Sequence[str], *, k1: float = 0.9, b: float = 0.4) -> tuple[list[float], float]:
    """BM25 of ``query`` for each document, and the most it could score (``(k1 + 1) x idf`` summed over
    its terms; a term no document holds at the rarest idf), as ``TermIndex.query_mass``."""
    tokenized = [tokenize(d) for d in documents]
    n = len(tokenized)
    if n == 0:
        return [], 0.0
    avg = sum(len(t) for t in tokenized) / n or 1.0
    df: Counter[str] = Counter()
    for tokens in tokenized:
        df.update(set(tokens))
    terms = set(tokenize(query))
    idf = {term: math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5)) for term in terms}
    scores = []
    for tokens in tokenized:
        tf = Counter(tokens)
        s = 0.0
        for term in terms:
            if tf[term]:
                s += idf[term] * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(tokens) / avg))
        scores.append(s)
    return scores, (k1 + 1) * sum(idf.values())
