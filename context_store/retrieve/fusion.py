"""Combining a dense and a full-text ranking into one.

Plain reciprocal rank fusion (``rrf``) throws the scores away: on StackFAQ, where dense
search is nearly perfect (nDCG@10 0.95) and BM25 is weak (0.64), RRF drags the fused
ranking down to ~0.88, because a weak text ranking gets as many votes as a strong one.
``score_fusion`` keeps the dense cosine as the anchor and adds the full-text score only in
proportion to how strong it is for *this* query: BM25 divided by its top score for the
query, weighted, and damped when the text ranking is flat (no document stands out).

The weight depends on the kind of query (``text_weight_for``): a short keyword query
("GTM events not firing", at most 4 content words) is where exact terms carry the most
and gets 0.4; a natural-language question gets 0.06, leaving it to the dense ranker that
reads paraphrases. A single weight could not serve both open sets: on StackFAQ any weight
above ~0.1 fell below dense alone, on the Plausible headings set anything below ~0.15 fell
below full-text alone. Measured with ``bench/quality.py``; the two weights and the
4-word boundary were chosen on those same two sets (no third set held out).

``bm25_scores`` is a small in-memory BM25 (k1=0.9, b=0.4, as BEIR's baselines) used where
LanceDB's full-text index cannot answer: point-in-time (``as_of``) retrieval over the
versions valid at a past moment.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from context_store.settings import RetrievalConfig

__all__ = ["Candidate", "bm25_scores", "fuse", "rrf", "score_fusion", "text_weight_for", "tokenize"]

RRF_K = 60


@dataclass
class Candidate:
    key: str  # chunk id
    vector_score: float | None = None  # cosine similarity
    text_score: float | None = None  # BM25 (None: not in the text ranking)
    vector_rank: int | None = None  # 1-based
    text_rank: int | None = None
    score: float = 0.0


def rrf(candidates: list[Candidate], k: int = RRF_K) -> list[Candidate]:
    for c in candidates:
        c.score = sum(1.0 / (k + r) for r in (c.vector_rank, c.text_rank) if r is not None)
    return sorted(candidates, key=lambda c: -c.score)


def score_fusion(candidates: list[Candidate], text_weight: float) -> list[Candidate]:
    """cosine + w * (bm25 / top bm25) * spread, where spread in [0, 1] says how peaked BM25 is.

    Every candidate must carry its cosine (the dense index scores any row cheaply), so a
    document found only by full-text is judged on both signals rather than on rank alone.
    """
    text = sorted((c.text_score for c in candidates if c.text_score is not None), reverse=True)
    top = text[0] if text else 0.0
    # A text ranking where the 10th hit scores like the 1st carries little information.
    spread = 0.0 if top <= 0 else min(1.0, max(0.0, (top - text[min(9, len(text) - 1)]) / top) * 2.0)
    for c in candidates:
        dense = c.vector_score if c.vector_score is not None else 0.0
        lexical = (c.text_score or 0.0) / top if top > 0 else 0.0
        c.score = dense + text_weight * spread * lexical
    return sorted(candidates, key=lambda c: -c.score)


def fuse(mode: str, candidates: list[Candidate], query: str, config: RetrievalConfig) -> list[Candidate]:
    """The candidates ranked as ``mode`` asks (``vector``, ``text``, ``rrf`` or ``hybrid``), best first."""
    if mode == "vector":
        for c in candidates:
            c.score = c.vector_score or 0.0
        return sorted(candidates, key=lambda c: -c.score)
    if mode == "text":
        for c in candidates:
            c.score = c.text_score or 0.0
        return sorted(candidates, key=lambda c: -c.score)
    if mode == "rrf":
        return rrf(candidates)
    weight = text_weight_for(
        query, question_weight=config.text_weight, keyword_weight=config.keyword_text_weight,
        keyword_max_terms=config.keyword_max_terms,
    )
    return score_fusion(candidates, weight)


def text_weight_for(query: str, *, question_weight: float, keyword_weight: float, keyword_max_terms: int) -> float:
    """Query-type detection: few content words = keyword query."""
    return keyword_weight if len(tokenize(query)) <= keyword_max_terms else question_weight


_TOKEN = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an and are as at be by for from has have how i if in is it its of on or that the this to was what when where which who why will with you your do does can my me".split()
)


def tokenize(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text.lower()) if t not in _STOP]


def bm25_scores(query: str, documents: Sequence[str], *, k1: float = 0.9, b: float = 0.4) -> list[float]:
    tokenized = [tokenize(d) for d in documents]
    n = len(tokenized)
    if n == 0:
        return []
    avg = sum(len(t) for t in tokenized) / n or 1.0
    df: Counter[str] = Counter()
    for tokens in tokenized:
        df.update(set(tokens))
    terms = set(tokenize(query))
    scores = []
    for tokens in tokenized:
        tf = Counter(tokens)
        s = 0.0
        for term in terms:
            if tf[term]:
                idf = math.log(1 + (n - df[term] + 0.5) / (df[term] + 0.5))
                s += idf * tf[term] * (k1 + 1) / (tf[term] + k1 * (1 - b + b * len(tokens) / avg))
        scores.append(s)
    return scores
