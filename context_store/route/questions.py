"""Routed questions: an escalation with its working memory, its lifecycle and its askers.

The working memory is everything the person answering needs so the user never repeats
themselves: the question, who asked (user id, snapshot version, conversation), the
retrieved context with document versions and scores, the user's facts, why it was
escalated, and the trace id of the response.

Lifecycle::

    open ──► answered ──► closed
      └────► dismissed

Near-duplicates: a new escalation whose question is close (cosine >= ``group_similarity``)
to an *open* question of the same kind joins it as another ``QuestionAsk`` instead of
queueing twice; the answer then serves every asker, and each one can be looked up.

Kinds (``KINDS``): ``escalation`` (the policy sent the question to a person), ``review`` (a
bot answer that failed afterwards, opened by ``route.outcomes`` with that answer's working
memory) and ``handoff`` (the agent handed the conversation over). Kinds never group together:
a review says "this answer failed", an escalation "nobody answered yet".
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlmodel import Session, col, func, select

from context_store._common import utcnow
from context_store.errors import InvalidRequest, QuestionConflict, UnknownQuestion
from context_store.retrieve.result import RetrievalResult
from context_store.route.decision import Reason
from context_store.route.grouping import join_nearest_open, remember_open
from context_store.route.outbox import enqueue
from context_store.route.policy import RoutingConfig, routing_config
from context_store.route.recording import Writes, writes_scope
from context_store.route.redact import redact
from context_store.route.triggers import to_vector
from context_store.store.context_store import ContextStore
from context_store.store.models import QuestionAsk, RoutedQuestion, StaffAnswer

__all__ = [
    "KINDS",
    "STATUSES",
    "RoutingOutcome",
    "ask_view",
    "WorkingMemory",
    "assign_question",
    "count_by_status",
    "get_question",
    "list_questions",
    "load_question",
    "open_question_ages",
    "question_view",
    "route_question",
    "set_status",
]

STATUSES = ("open", "answered", "closed", "dismissed")
MAX_LIMIT, MAX_OFFSET = 1000, 1_000_000_000  # paging past these is a caller's mistake (and overflows SQL integers)
KINDS = ("escalation", "review", "handoff")
_QUESTIONS = RoutedQuestion.__table__  # type: ignore[attr-defined]
_ASKS = QuestionAsk.__table__  # type: ignore[attr-defined]
_ALLOWED = {"open": {"answered", "dismissed"}, "answered": {"closed"}, "closed": set(), "dismissed": set()}


@dataclass
class RoutingOutcome:
    question_id: str
    grouped: bool
    similarity: float
    ask_count: int

    def as_dict(self) -> dict[str, Any]:
        return {"question_id": self.question_id, "grouped": self.grouped, "similarity": round(self.similarity, 4), "ask_count": self.ask_count}


@dataclass
class WorkingMemory:
    """What the person answering needs: the question, who asked, the context and the user's facts."""

    text: str
    user_id: str | None = None
    user_version_id: str | None = None
    context: list[dict[str, Any]] = field(default_factory=list)
    user_state: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(cls, result: RetrievalResult) -> "WorkingMemory":
        return cls(
            result.query, result.user_id, result.user_version_id, _hit_memory(result),
            [{"key": f.key, "text": f.text, "score": round(float(f.score), 4)} for f in result.user_state],
        )


def _hit_memory(result: RetrievalResult) -> list[dict[str, Any]]:
    return [
        {
            "chunk_id": h.chunk_id, "doc_id": h.doc_id, "version_id": h.version_id, "title": h.title, "heading": h.heading,
            "text": h.text, "score": round(float(h.score), 4), "source_path": h.source_path, "kind": h.kind,
            "source_changed_at": h.source_changed_at.isoformat() if isinstance(h.source_changed_at, datetime) else h.source_changed_at,
        }
        for h in result.results
    ]


def route_question(
    store: ContextStore,
    result: RetrievalResult | WorkingMemory,
    reasons: list[Reason],
    *,
    vector: np.ndarray,
    model: str,
    confidence: float | None = None,
    trace_id: str | None = None,
    conversation_id: str | None = None,
    transcript: list[dict[str, Any]] | None = None,
    kind: str = "escalation",
    review: dict[str, Any] | None = None,
    config: RoutingConfig | None = None,
    now: datetime | None = None,
    session: Session | Writes | None = None,
) -> RoutingOutcome:
    """Queue a question of ``kind`` (or join an open near-duplicate of that kind) and its notification, in one
    transaction (``session``: the caller's). ``result``: the escalated retrieval, or an earlier one's
    ``WorkingMemory`` (a review); ``transcript`` (checked by ``route.transcript``) joins a new question's memory."""
    if kind not in KINDS:
        raise InvalidRequest(f"question kind must be one of {', '.join(KINDS)}, got {kind!r}")
    config = config or routing_config(store.settings)
    now = now or utcnow()
    vector = np.asarray(vector, dtype=np.float32)
    reason_dicts = [r.as_dict() for r in reasons]
    text = result.text if isinstance(result, WorkingMemory) else result.query
    with writes_scope(store.engine, session) as writes:
        best, best_sim, ask_count = join_nearest_open(writes, vector, model, kind, config.group_similarity, now)
        ask = {
            "text": text, "user_id": result.user_id, "user_version_id": result.user_version_id,
            "conversation_id": conversation_id, "trace_id": trace_id, "reasons": reason_dicts, "asked_at": now,
        }
        if best is not None:
            again = {**ask, "question_id": best, "similarity": best_sim}
            writes.add(_ASKS, again)
            if config.outbound_url:
                enqueue(writes.session(), "routed_question.asked_again", config.outbound_url,
                        {"question_id": best, "ask": ask_view(QuestionAsk(**again)), "ask_count": ask_count}, now=now)
            return RoutingOutcome(best, True, best_sim, ask_count)
        # Only a new question carries the working memory: most escalations join one (no context copied for them).
        memory = result if isinstance(result, WorkingMemory) else WorkingMemory.of(result)
        question = {
            "question_id": "q-" + secrets.token_hex(8), "status": "open", "kind": kind, "text": text,
            "user_id": memory.user_id, "user_version_id": memory.user_version_id, "conversation_id": conversation_id,
            "trace_id": trace_id, "confidence": confidence, "reasons": reason_dicts, "context": memory.context,
            "user_state": memory.user_state, "model": model, "vector": to_vector(vector), "ask_count": 1,
            "created_at": now, "updated_at": now, "review": review, "transcript": transcript or None,
        }
        first = {**ask, "question_id": question["question_id"], "similarity": 1.0}
        # Core rows, as the trace's: this runs on every escalation, and the ORM's unit of work
        # (objects, identity map, a flush between the two rows) cost more than the rows.
        writes.add(_QUESTIONS, question)
        writes.add(_ASKS, first)
        remember_open(writes, model, kind, question["question_id"], vector)
        if config.outbound_url:
            view = question_view(RoutedQuestion(**question), [QuestionAsk(**first)], None, redact_patterns=config.redact_patterns)
            enqueue(writes.session(), "routed_question.created", config.outbound_url, view, now=now)
        return RoutingOutcome(question["question_id"], False, 1.0, 1)


def ask_view(ask: QuestionAsk) -> dict[str, Any]:
    return {
        "text": ask.text, "user_id": ask.user_id, "user_version_id": ask.user_version_id, "conversation_id": ask.conversation_id,
        "trace_id": ask.trace_id, "similarity": round(ask.similarity, 4), "reasons": ask.reasons,
        "asked_at": ask.asked_at.isoformat() if ask.asked_at else None,
    }


def question_view(
    question: RoutedQuestion, asks: list[QuestionAsk], answer: StaffAnswer | None, *, redact_patterns: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The JSON shape of a routed question everywhere: API, outbound notification, staff page.

    ``text`` and the asks are the customer's words (working memory, never published as they
    stand); ``suggested_question`` is what staff are offered to publish: redacted, one line.
    """
    iso = lambda d: d.isoformat() if d else None  # noqa: E731
    return {
        "question_id": question.question_id,
        "status": question.status,
        "kind": question.kind,
        "text": question.text,
        "suggested_question": redact(question.text, redact_patterns),
        "user_id": question.user_id,
        "user_version_id": question.user_version_id,
        "conversation_id": question.conversation_id,
        "trace_id": question.trace_id,
        "confidence": question.confidence,
        "reasons": question.reasons,
        "context": question.context,
        "user_state": question.user_state,
        "transcript": question.transcript or [],
        "owner": question.owner,
        "ask_count": question.ask_count,
        "asks": [ask_view(a) for a in asks],
        "created_at": iso(question.created_at),
        "updated_at": iso(question.updated_at),
        "answered_at": iso(question.answered_at),
        "closed_at": iso(question.closed_at),
        "resolution_note": question.resolution_note,
        "review": question.review,
        "answer": None if answer is None else {
            "answer_id": answer.answer_id, "author": answer.author, "text": answer.text, "received_at": iso(answer.received_at),
            "doc_id": answer.doc_id, "source_versions": answer.source_versions, "retrievable_at": iso(answer.retrievable_at),
            "needs_review": answer.needs_review, "review_reason": answer.review_reason,
            "question": answer.question, "paraphrases": answer.paraphrases or [], "scope": answer.scope,
            "user_id": answer.scope_user_id, "reviewed_at": iso(answer.reviewed_at), "retired_at": iso(answer.retired_at),
        },
    }


def load_question(session: Session, question_id: str) -> RoutedQuestion:
    question = session.get(RoutedQuestion, question_id)
    if question is None:
        raise UnknownQuestion(f"no routed question {question_id!r}")
    return question


def get_question(store: ContextStore, question_id: str) -> dict[str, Any]:
    with store.session() as session:
        question = load_question(session, question_id)
        asks = list(session.exec(select(QuestionAsk).where(QuestionAsk.question_id == question_id).order_by(col(QuestionAsk.asked_at))).all())
        answer = session.exec(select(StaffAnswer).where(StaffAnswer.question_id == question_id)).first()
        return question_view(question, asks, answer, redact_patterns=routing_config(store.settings).redact_patterns)


def list_questions(
    store: ContextStore, *, status: str | None = "open", kind: str | None = None, limit: int = 100, offset: int = 0,
) -> list[dict[str, Any]]:
    """Oldest first, so the queue is worked in order; every kind unless ``kind`` is given."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if kind is not None and kind not in KINDS:
        raise InvalidRequest(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidRequest(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")
    with store.session() as session:
        query = select(RoutedQuestion).order_by(col(RoutedQuestion.created_at)).offset(offset).limit(limit)
        if status is not None:
            query = query.where(RoutedQuestion.status == status)
        if kind is not None:
            query = query.where(RoutedQuestion.kind == kind)
        questions = list(session.exec(query).all())
        ids = [q.question_id for q in questions]
        asks: dict[str, list[QuestionAsk]] = {i: [] for i in ids}
        answers: dict[str, StaffAnswer] = {}
        if ids:
            for a in session.exec(select(QuestionAsk).where(col(QuestionAsk.question_id).in_(ids)).order_by(col(QuestionAsk.asked_at))).all():
                asks[a.question_id].append(a)
            for ans in session.exec(select(StaffAnswer).where(col(StaffAnswer.question_id).in_(ids))).all():
                answers[ans.question_id] = ans
        patterns = routing_config(store.settings).redact_patterns
        return [question_view(q, asks[q.question_id], answers.get(q.question_id), redact_patterns=patterns) for q in questions]


def assign_question(store: ContextStore, question_id: str, owner: str | None, *, now: datetime | None = None) -> dict[str, Any]:
    with store.session() as session:
        question = load_question(session, question_id)
        if question.status != "open":
            raise QuestionConflict(f"question {question_id} is {question.status}; only open questions take an owner")
        question.owner = (owner or "").strip() or None
        question.updated_at = now or utcnow()
        session.add(question)
    return get_question(store, question_id)


def set_status(store: ContextStore, question_id: str, status: str, *, note: str | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Move a question along its lifecycle; ``answered`` only happens by storing an answer (``learning``)."""
    if status not in ("closed", "dismissed"):
        raise InvalidRequest(f"status can be set to closed or dismissed here, got {status!r} (answer a question to make it answered)")
    now = now or utcnow()
    with store.session() as session:
        question = load_question(session, question_id)
        if status not in _ALLOWED[question.status]:
            raise QuestionConflict(f"question {question_id} is {question.status}; it cannot become {status}")
        question.status = status
        question.closed_at = now
        question.updated_at = now
        question.resolution_note = note
        session.add(question)
    return get_question(store, question_id)


def open_question_ages(store: ContextStore, *, now: datetime | None = None) -> dict[str, int]:
    """Open questions by age bucket, for the queue's health metrics."""
    now = now or utcnow()
    buckets = {"<1h": 0, "1-4h": 0, "4-24h": 0, "1-3d": 0, ">3d": 0}
    with store.session() as session:
        for created in session.exec(select(RoutedQuestion.created_at).where(RoutedQuestion.status == "open")).all():
            hours = (now - created).total_seconds() / 3600
            key = "<1h" if hours < 1 else "1-4h" if hours < 4 else "4-24h" if hours < 24 else "1-3d" if hours < 72 else ">3d"
            buckets[key] += 1
    return buckets


def count_by_status(session: Session) -> dict[str, int]:
    rows = session.exec(select(RoutedQuestion.status, func.count()).group_by(RoutedQuestion.status)).all()
    return {status: 0 for status in STATUSES} | {s: int(n) for s, n in rows}
