"""Retrieval features for the served confidence (``context_store.route.confidence.FEATURES``),
computed from the ranked candidates of one request."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np

from context_store._common import as_utc, utcnow
from context_store.retrieve.pool import Candidate, Pool

__all__ = ["confidence_features", "pool_features"]


def _dense_doc_scores(pool: Pool, order: np.ndarray) -> tuple[int | None, list[float]]:
    """The best candidate by cosine (ties: the better ranked), and the best cosine of the first two
    distinct documents (a margin between two chunks of one document says nothing about which
    document answers)."""
    scored = order[~np.isnan(pool.cos[order])]
    if not len(scored):
        return None, []
    by_dense = scored[np.argsort(-pool.cos[scored], kind="stable")]
    docs_seen: list[int] = []
    scores: list[float] = []
    for i in by_dense.tolist():  # a few steps: the first two documents are near the top
        if pool.doc[i] not in docs_seen:
            docs_seen.append(pool.doc[i])
            scores.append(float(pool.cos[i]))
        if len(scores) == 2:
            break
    return int(by_dense[0]), scores


def _age_days(changed: Any) -> float:
    if not isinstance(changed, datetime):
        return 0.0
    return max(0.0, (utcnow() - as_utc(changed)).total_seconds() / 86400)


def pool_features(pool: Pool, order: np.ndarray, scores: np.ndarray, top_changed_at: Any = None) -> dict[str, float]:
    """Top cosine and its margin over the next document, full-text strength, agreement of the
    two rankers on the top chunk, the fused top score, the top source's age (``top_changed_at``:
    when the best ranked chunk's source changed), the candidate count."""
    top_dense, dense = _dense_doc_scores(pool, order)
    text = np.sort(pool.text[~np.isnan(pool.text)])[::-1]
    top_text = float(text[0]) if len(text) else 0.0
    agreement = 0.0
    if top_dense is not None and len(text) and not np.isnan(pool.text[top_dense]):
        rank = int(pool.text_rank[top_dense])
        agreement = 1.0 / rank if rank else 0.0
    return {
        "dense_top": dense[0] if dense else 0.0,
        "dense_margin": (dense[0] - dense[1]) if len(dense) > 1 else (dense[0] if dense else 0.0),
        "text_top": top_text,
        "text_ratio": float(text[1]) / top_text if len(text) > 1 and top_text > 0 else 0.0,
        "agreement": agreement,
        "fused_top": float(scores[order[0]]) if len(order) else 0.0,
        "top_age_days": _age_days(top_changed_at) if len(order) else 0.0,
        "candidates": float(len(pool)),
    }


def confidence_features(fused: list[Candidate], rows: Mapping[str, Mapping[str, Any]], mode: str) -> dict[str, float]:
    """``pool_features`` of a ranked list of candidates, whose rows (by chunk id) hold each one's document."""
    docs = [rows[c.key]["doc_id"] if c.key in rows else c.key for c in fused]
    top = fused[0] if fused else None
    changed = rows[top.key].get("source_changed_at") if top is not None and top.key in rows else None
    order = np.arange(len(fused))
    return pool_features(Pool.of(fused, docs), order, np.array([c.score for c in fused], dtype=np.float64), changed)
