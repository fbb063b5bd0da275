"""Retrieval features for the served confidence (``context_store.route.confidence.FEATURES``),
computed from the fused candidates of one request."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from context_store._common import as_utc, utcnow
from context_store.retrieve.fusion import Candidate

__all__ = ["confidence_features"]


def _dense_doc_scores(fused: list[Candidate], rows: Mapping[str, Mapping[str, Any]]) -> tuple[list[Candidate], list[float]]:
    """Candidates by cosine, and the best cosine of the first two distinct documents (a margin
    between two chunks of one document says nothing about which document answers)."""
    by_dense = sorted((c for c in fused if c.vector_score is not None), key=lambda c: -(c.vector_score or 0.0))
    docs_seen: list[str] = []
    scores: list[float] = []
    for c in by_dense:
        doc = rows[c.key]["doc_id"] if c.key in rows else c.key
        if doc not in docs_seen:
            docs_seen.append(doc)
            scores.append(float(c.vector_score or 0.0))
        if len(scores) == 2:
            break
    return by_dense, scores


def _top_age_days(top: Candidate | None, rows: Mapping[str, Mapping[str, Any]]) -> float:
    if top is None or top.key not in rows:
        return 0.0
    changed = rows[top.key].get("source_changed_at")
    if not isinstance(changed, datetime):
        return 0.0
    return max(0.0, (utcnow() - as_utc(changed)).total_seconds() / 86400)


def confidence_features(fused: list[Candidate], rows: Mapping[str, Mapping[str, Any]], mode: str) -> dict[str, float]:
    """Top cosine and its margin over the next document, full-text strength, agreement of the
    two rankers on the top chunk, the fused top score, the top source's age, the candidate count."""
    by_dense, dense = _dense_doc_scores(fused, rows)
    text = sorted((c for c in fused if c.text_score is not None), key=lambda c: -(c.text_score or 0.0))
    top_text = float(text[0].text_score or 0.0) if text else 0.0
    agreement = 0.0
    if by_dense and text:
        top_dense_key = by_dense[0].key
        rank = next((c.text_rank for c in text if c.key == top_dense_key), None)
        agreement = 1.0 / rank if rank else 0.0
    top = fused[0] if fused else None
    return {
        "dense_top": dense[0] if dense else 0.0,
        "dense_margin": (dense[0] - dense[1]) if len(dense) > 1 else (dense[0] if dense else 0.0),
        "text_top": top_text,
        "text_ratio": float(text[1].text_score or 0.0) / top_text if len(text) > 1 and top_text > 0 else 0.0,
        "agreement": agreement,
        "fused_top": float(top.score) if top else 0.0,
        "top_age_days": _top_age_days(top, rows),
        "candidates": float(len(fused)),
    }
