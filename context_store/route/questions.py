"""Routed questions: an escalation with its working memory, its lifecycle and its askers.

The working memory is everything the person answering needs so the user never repeats
themselves: the question, who asked (user id, snapshot version, conversation), the
retrieved context with document versions and scores, the user's facts, why it was
escalated, and the trace id of the response.

Lifecycle::

    open ──► answered ──► closed
      └────► dismissed

Near-duplicates: a new escalation whose question is close (cosine >= ``group_similarity``)
to an *open* question joins it as another ``QuestionAsk`` instead of queueing twice; the
answer then serves every asker, and each one can be looked up.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import insert
from sqlmodel import Session, col, func, select

from context_store._common import utcnow
from context_store.errors import InvalidRequest, QuestionConflict, UnknownQuestion
from context_store.retrieve.result import RetrievalResult
from context_store.route.decision import Reason
from context_store.route.outbox import enqueue
from context_store.route.policy import RoutingConfig, routing_config
from context_store.route.redact import redact
from context_store.route.triggers import from_vector, to_vector
from context_store.store.context_store import ContextStore
from context_store.store.database import in_batches
from context_store.store.models import QuestionAsk, RoutedQuestion, StaffAnswer

__all__ = [
    "STATUSES",
    "RoutingOutcome",
    "ask_view",
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
_ALLOWED = {"open": {"answered", "dismissed"}, "answered": {"closed"}, "closed": set(), "dismissed": set()}


@dataclass
class RoutingOutcome:
    question_id: str
    grouped: bool
    similarity: float
    ask_count: int

    def as_dict(self) -> dict[str, Any]:
        return {"question_id": self.question_id, "grouped": self.grouped, "similarity": round(self.similarity, 4), "ask_count": self.ask_count}


def _hit_memory(result: RetrievalResult) -> list[dict[str, Any]]:
    return [
        {
            "chunk_id": h.chunk_id, "doc_id": h.doc_id, "version_id": h.version_id, "title": h.title, "heading": h.heading,
            "text": h.text, "score": round(float(h.score), 4), "source_path": h.source_path, "kind": h.kind,
            "source_changed_at": h.source_changed_at.isoformat() if isinstance(h.source_changed_at, datetime) else h.source_changed_at,
        }
        for h in result.results
    ]


class _OpenVectors:
    """Vectors of open questions, per process, as rows of one matrix that grows in place.

    A question's vector never changes and a question never returns to ``open``, so the set
    needs three kinds of news, none of which costs a request more than the product with the
    matrix (~0.1 ms at 3,000 open questions):

    * this process's own new questions: added as they are queued (``add``, amortised O(1));
    * questions other processes queued: at most every ``REFRESH_S`` the ids created in the
      last ``SLACK_S`` seconds are read (the slack covers a creation time stamped before its
      transaction committed), and only unknown ones are fetched;
    * questions that left ``open``: a nearest one at or above the grouping similarity is
      re-read before a question joins it, and dropped when closed (its row is zeroed, so it
      never wins again); every ``FULL_REFRESH_S`` the open ids are read whole, which drops
      the rest. Re-reading every open id each second cost ~5 ms a request with ~1,200 open
      questions, and rebuilding the matrix on every escalation grew with the queue too.
    """

    REFRESH_S = 1.0
    SLACK_S = 10.0
    FULL_REFRESH_S = 60.0

    def __init__(self) -> None:
        self.ids: list[str | None] = []  # row -> question id (None: dropped)
        self.row_of: dict[str, int] = {}
        self.matrix = np.zeros((0, 0), dtype=np.float32)  # capacity rows; the first len(ids) are in use
        self.refreshed_at = -1e18
        self.full_refresh_at = -1e18
        self.lock = threading.Lock()

    @property
    def vectors(self) -> dict[str, np.ndarray]:
        """Open question id -> vector (for inspection; requests use the matrix)."""
        with self.lock:
            return {i: self.matrix[row].copy() for i, row in self.row_of.items()}

    def _refresh(self, session: Session, model: str) -> None:
        now = time.monotonic()
        full = now - self.full_refresh_at >= self.FULL_REFRESH_S
        query = select(RoutedQuestion.question_id).where(RoutedQuestion.status == "open", RoutedQuestion.model == model)
        if not full:
            query = query.where(col(RoutedQuestion.created_at) >= utcnow() - timedelta(seconds=self.SLACK_S))
        ids = set(session.exec(query).all())
        if full:
            for gone in [i for i in self.row_of if i not in ids]:  # closed questions leave the cache
                self._drop(gone)
            self.full_refresh_at = now
        missing = sorted(i for i in ids if i not in self.row_of)
        for part in in_batches(missing, 500):
            for question_id, blob in session.exec(
                select(RoutedQuestion.question_id, RoutedQuestion.vector).where(col(RoutedQuestion.question_id).in_(part))
            ).all():
                self._add(question_id, from_vector(blob))
        self.refreshed_at = now

    def _add(self, question_id: str, vector: np.ndarray) -> None:
        if question_id in self.row_of:
            return
        if not self.ids or self.matrix.shape[1] != vector.shape[0]:
            if self.row_of:
                return  # another dimension than the open questions of this model: cannot be compared
            self.ids, self.matrix = [], np.zeros((64, vector.shape[0]), dtype=np.float32)
        n = len(self.ids)
        if n == self.matrix.shape[0]:
            self.matrix = np.concatenate([self.matrix, np.zeros_like(self.matrix)])  # double: amortised O(1)
        self.matrix[n] = vector
        self.ids.append(question_id)
        self.row_of[question_id] = n

    def _drop(self, question_id: str) -> None:
        row = self.row_of.pop(question_id, None)
        if row is None:
            return
        self.matrix[row] = 0.0  # a zero row scores 0, below any grouping similarity
        self.ids[row] = None
        if len(self.row_of) * 2 < len(self.ids) and len(self.ids) > 64:  # mostly dropped rows: compact
            keep = list(self.row_of.items())
            self.ids = [i for i, _ in keep]
            self.matrix = np.concatenate([self.matrix[[r for _, r in keep]], np.zeros((max(64, len(keep)), self.matrix.shape[1]), np.float32)])
            self.row_of = {i: r for r, i in enumerate(self.ids)}

    def add(self, question_id: str, vector: np.ndarray) -> None:
        with self.lock:
            self._add(question_id, np.asarray(vector, dtype=np.float32))

    def drop(self, question_id: str) -> None:
        with self.lock:
            self._drop(question_id)

    def nearest(self, session: Session, vector: np.ndarray, model: str) -> tuple[str | None, float]:
        with self.lock:
            if time.monotonic() - self.refreshed_at >= self.REFRESH_S:
                self._refresh(session, model)
            n = len(self.ids)
            if not self.row_of or self.matrix.shape[1] != vector.shape[0]:
                return None, -1.0
            sims = self.matrix[:n] @ vector
            i = int(np.argmax(sims))
            return self.ids[i], float(sims[i])


_OPEN: dict[tuple[str, str], _OpenVectors] = {}
_OPEN_LOCK = threading.Lock()


def _open_cache(session: Session, model: str) -> _OpenVectors:
    key = (str(session.get_bind().url), model)
    with _OPEN_LOCK:
        return _OPEN.setdefault(key, _OpenVectors())


def _nearest_open(session: Session, vector: np.ndarray, model: str, similarity: float) -> tuple[RoutedQuestion | None, float]:
    """The open question most similar to ``vector`` if it is at least ``similarity`` close; its row
    is read afresh (only then), and a question that has left ``open`` since the cache saw it is
    dropped and the next nearest is tried."""
    cache = _open_cache(session, model)
    for _ in range(5):  # more than a few closed in the last second means the cache is stale: refresh
        question_id, sim = cache.nearest(session, vector, model)
        if question_id is None or sim < similarity:
            return None, sim
        best = session.get(RoutedQuestion, question_id)
        if best is not None and best.status == "open":
            return best, sim
        cache.drop(question_id)  # the next nearest() no longer sees it
    cache.refreshed_at = cache.full_refresh_at = -1e18
    return None, -1.0


def route_question(
    store: ContextStore,
    result: RetrievalResult,
    reasons: list[Reason],
    *,
    vector: np.ndarray,
    model: str,
    confidence: float | None = None,
    trace_id: str | None = None,
    conversation_id: str | None = None,
    transcript: list[dict[str, Any]] | None = None,
    config: RoutingConfig | None = None,
    now: datetime | None = None,
    session: Session | None = None,
) -> RoutingOutcome:
    """Queue an escalated question (or group it with an open near-duplicate) and its notification.

    ``transcript`` (the conversation's last turns, checked by ``route.transcript``) joins a new
    question's working memory.

    The question, its ask and its outbox message commit in one transaction (``session``:
    the caller's), so a question is never queued without its notification or the other way round.
    """
    config = config or routing_config(store.settings)
    now = now or utcnow()
    vector = np.asarray(vector, dtype=np.float32)
    reason_dicts = [r.as_dict() for r in reasons]
    with store.session(session) as session:
        best, best_sim = _nearest_open(session, vector, model, config.group_similarity)
        ask = {
            "text": result.query, "user_id": result.user_id, "user_version_id": result.user_version_id,
            "conversation_id": conversation_id, "trace_id": trace_id, "reasons": reason_dicts, "asked_at": now,
        }
        if best is not None:
            best.ask_count += 1
            best.updated_at = now
            again = QuestionAsk(**ask, question_id=best.question_id, similarity=best_sim)
            session.add_all([best, again])
            if config.outbound_url:
                enqueue(session, "routed_question.asked_again", config.outbound_url,
                        {"question_id": best.question_id, "ask": ask_view(again), "ask_count": best.ask_count}, now=now)
            return RoutingOutcome(best.question_id, True, best_sim, best.ask_count)
        question = {
            "question_id": "q-" + secrets.token_hex(8), "status": "open", "kind": "escalation", "text": result.query,
            "user_id": result.user_id, "user_version_id": result.user_version_id, "conversation_id": conversation_id,
            "trace_id": trace_id, "confidence": confidence, "reasons": reason_dicts, "context": _hit_memory(result),
            "user_state": [{"key": f.key, "text": f.text, "score": round(float(f.score), 4)} for f in result.user_state],
            "model": model, "vector": to_vector(vector), "ask_count": 1, "created_at": now, "updated_at": now,
            "transcript": transcript or None,
        }
        first = {**ask, "question_id": question["question_id"], "similarity": 1.0}
        # Core inserts, as the trace's: this runs on every escalation, and the ORM's unit of
        # work (objects, identity map, a flush between the two rows) cost more than the rows.
        session.execute(insert(RoutedQuestion.__table__), [question])  # type: ignore[attr-defined]
        session.execute(insert(QuestionAsk.__table__), [first])  # type: ignore[attr-defined]
        # Seen by this process's next escalation at once (others within REFRESH_S); a rollback
        # leaves an id whose row is missing, which _nearest_open drops when it meets it.
        _open_cache(session, model).add(question["question_id"], vector)
        if config.outbound_url:
            view = question_view(RoutedQuestion(**question), [QuestionAsk(**first)], None, redact_patterns=config.redact_patterns)
            enqueue(session, "routed_question.created", config.outbound_url, view, now=now)
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


def list_questions(store: ContextStore, *, status: str | None = "open", limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    """Oldest first, so the queue is worked in order."""
    if status is not None and status not in STATUSES:
        raise InvalidRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidRequest(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")
    with store.session() as session:
        query = select(RoutedQuestion).order_by(col(RoutedQuestion.created_at)).offset(offset).limit(limit)
        if status is not None:
            query = query.where(RoutedQuestion.status == status)
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
