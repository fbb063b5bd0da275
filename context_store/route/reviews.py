"""Retroactive escalation: a confident answer that failed afterwards goes to a person, with its working memory.

"A case that generated a callback within 48 hours is an escalation signal retroactively —
even if the agent closed it at 94 % confidence." When an outcome says a bot-answered
response failed (``failure_of``: ``unresolved``, ``reopened``, ``repeat_contact``, thumbs
down, a low CSAT), ``open_review`` queues a routed question of kind ``review`` carrying
that answer's working memory: the question, the served context (texts rebuilt from the
versioned store, with their document versions), the user's facts, the confidence, threshold
and decision, and what came back and when ("answered at 0.86, the user came back 6 h
later"). It is grouped like any routed question (near-duplicate open reviews become one,
asked N times) and announced in the outbox.

One review per response: the response's ``review_question_id`` is claimed with a
conditional ``UPDATE`` before the question is queued, so two failed outcomes arriving at
once (thumbs down and ``unresolved``) open one review, not two.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import update
from sqlmodel import Session, select

from context_store.route.decision import Reason
from context_store.route.questions import WorkingMemory, route_question
from context_store.route.traces import served_context
from context_store.route.triggers import from_vector
from context_store.store.context_store import ContextStore
from context_store.store.models import AskedQuestion, RetrievalTrace

__all__ = ["FAILED_OUTCOMES", "Failure", "failure_of", "open_review", "since_text"]

FAILED_OUTCOMES = ("unresolved", "reopened", "repeat_contact")
_CLAIMING = "claiming"  # the trace's review_question_id while this transaction queues the review


@dataclass(frozen=True)
class Failure:
    """Why an answer counts as failed: the outcome and the rating that came with it."""

    outcome: str
    thumbs: str | None = None
    csat: int | None = None

    def describe(self) -> str:
        extra = [f"thumbs {self.thumbs}"] if self.thumbs else []
        extra += [f"CSAT {self.csat}"] if self.csat is not None else []
        return self.outcome.replace("_", " ") + (f" ({', '.join(extra)})" if extra else "")


def failure_of(outcome: str, *, thumbs: str | None = None, csat: int | None = None, csat_max: int = 2) -> Failure | None:
    """The failure an outcome reports, or ``None`` when it does not say the answer failed."""
    if outcome in FAILED_OUTCOMES or thumbs == "down" or (csat is not None and csat <= csat_max):
        return Failure(outcome, thumbs, csat)
    return None


def since_text(seconds: float) -> str:
    """'40 min', '6 h', '3 days': how long after the answer the user came back."""
    if seconds < 3600:
        return f"{max(1, round(seconds / 60))} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"


def _memory(store: ContextStore, trace: RetrievalTrace) -> WorkingMemory:
    """The answer as it was served (``traces.served_context``) and the user's facts at the time."""
    facts = [{"key": f.get("key"), "text": f.get("text"), "score": f.get("score")} for f in trace.user_facts or []]
    return WorkingMemory(trace.query, trace.user_id, trace.user_version_id, served_context(store, trace), facts)


def _vector(session: Session, trace: RetrievalTrace) -> np.ndarray:
    blob = session.exec(select(AskedQuestion.vector).where(AskedQuestion.trace_id == trace.trace_id)).first()
    # an answer logged without its question (none today) still gets a review; it just groups with nothing
    return from_vector(blob) if blob is not None else np.zeros(1, dtype=np.float32)


def _claim(session: Session, trace_id: str, value: str, *, expect: str | None) -> bool:
    table = RetrievalTrace.__table__  # type: ignore[attr-defined]
    where = table.c.review_question_id.is_(None) if expect is None else table.c.review_question_id == expect
    result = session.execute(update(table).where(table.c.trace_id == trace_id, where).values(review_question_id=value))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def open_review(
    store: ContextStore, session: Session, trace: RetrievalTrace, failure: Failure | None, *, at: datetime, now: datetime,
) -> str | None:
    """Queue the review of a failed bot answer (once per response); returns its question id, or ``None``."""
    if failure is None or trace.decision != "answer" or trace.as_of is not None:
        return None  # an escalation already went to a person; an audit (as_of) was never an answer
    if not _claim(session, trace.trace_id, _CLAIMING, expect=None):
        return None  # this response has its review already
    after = max(0.0, (at - trace.created_at).total_seconds())
    summary = f"answered at {trace.confidence:.2f}, the user came back {since_text(after)} later"
    review: dict[str, Any] = {
        "trace_id": trace.trace_id, "answered_at": trace.created_at.isoformat(), "confidence": trace.confidence,
        "threshold": trace.threshold, "confidence_source": trace.confidence_source, "decision": trace.decision,
        "outcome": failure.outcome, "thumbs": failure.thumbs, "csat": failure.csat, "came_back_at": at.isoformat(),
        "came_back_after_s": round(after, 1), "summary": summary,
        "versions": [{"doc_id": r.get("doc_id"), "version_id": r.get("version_id")} for r in trace.results or []],
    }
    reason = Reason("answer_failed", f"{summary}: {failure.describe()}", round(trace.confidence, 4), source="outcome")
    routed = route_question(
        store, _memory(store, trace), [reason], vector=_vector(session, trace), model=trace.model, confidence=trace.confidence,
        trace_id=trace.trace_id, conversation_id=trace.conversation_id, kind="review", review=review, now=now, session=session,
    )
    _claim(session, trace.trace_id, routed.question_id, expect=_CLAIMING)
    return routed.question_id
