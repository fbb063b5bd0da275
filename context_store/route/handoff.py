"""The red button: a person, now, with the whole conversation.

An agent (or the user through it) asks for a person. That is not a retrieval to score:
``request_handoff`` opens a routed question of kind ``handoff`` at once, without a
confidence check, whose working memory holds what the person answering needs so the user
never repeats themselves:

* the transcript (checked and bounded by ``route.transcript``);
* the user's current state (snapshot version and facts), when a user is named;
* the context of the conversation's last response (its latest trace: the chunks served,
  with their document versions and texts rebuilt from the versioned store);
* why the button was pressed.

A second press in the same conversation while its hand-off is still open joins it: one
more ask, the new turns merged into the transcript, no second question in the queue.
Hand-offs never group with escalations by similarity (they carry no question vector).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from context_store._common import utcnow
from context_store.errors import InvalidRequest, UnknownUser
from context_store.route.decision import Reason
from context_store.route.outbox import enqueue
from context_store.route.policy import RoutingConfig, routing_config
from context_store.route.questions import ask_view, question_view
from context_store.route.traces import latest_trace, served_context
from context_store.route.transcript import check_turns, merge_turns
from context_store.state.user_state import current_snapshot
from context_store.store.context_store import ContextStore
from context_store.store.database import lineage_lock
from context_store.store.models import QuestionAsk, RoutedQuestion, UserRecord

__all__ = ["HANDOFF", "HANDOFF_REQUESTED", "MAX_REASON_CHARS", "HandoffOutcome", "request_handoff"]

HANDOFF = "handoff"  # the routed question's kind
HANDOFF_REQUESTED = "handoff_requested"  # the reason code it carries
MAX_REASON_CHARS = 2_000
MAX_CONVERSATION_ID_CHARS = 200


@dataclass
class HandoffOutcome:
    """Where the press went: the question, whether it joined an open one, and the trace it carries."""

    question_id: str
    joined: bool
    ask_count: int
    status: str
    conversation_id: str
    trace_id: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"question_id": self.question_id, "kind": HANDOFF, "joined": self.joined, "ask_count": self.ask_count,
                "status": self.status, "conversation_id": self.conversation_id, "trace_id": self.trace_id}


def _checked_text(value: Any, name: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest(f"{name} must be a non-empty string")
    if len(value) > limit:
        raise InvalidRequest(f"{name} has {len(value)} characters; at most {limit} are accepted")
    return value.strip()


def _user_memory(session: Session, user_id: str | None) -> tuple[str | None, list[dict[str, Any]]]:
    """The user's current snapshot version and facts; an unknown user is the caller's mistake."""
    if user_id is None:
        return None, []
    if session.get(UserRecord, user_id) is None:
        raise UnknownUser(f"unknown user {user_id!r}: hand off without user_id, or with the id their state is kept under")
    snapshot = current_snapshot(session, user_id)
    if snapshot is None:
        raise UnknownUser(f"user {user_id!r} has no current state (their snapshot was removed); hand off without user_id")
    return snapshot.version_id, [{"key": f.get("key"), "text": f.get("text")} for f in snapshot.facts or []]


def _question_text(turns: list[dict[str, Any]], reason: str) -> str:
    """What the person is asked about: the user's last words, else the reason the button was pressed."""
    return next((t["text"] for t in reversed(turns) if t["role"] == "user"), reason)


def _join(
    session: Session, question: RoutedQuestion, ask: QuestionAsk, turns: list[dict[str, Any]], facts: list[dict[str, Any]],
    context: list[dict[str, Any]], config: RoutingConfig, now: datetime,
) -> HandoffOutcome:
    """A second press: one more ask, the new turns merged in, the newest user state and context kept."""
    question.ask_count += 1
    question.updated_at = now
    question.transcript = merge_turns(question.transcript, turns)
    if ask.user_version_id:
        question.user_version_id, question.user_state = ask.user_version_id, facts
    if ask.trace_id:
        question.context, question.trace_id = context, ask.trace_id
    ask.question_id = question.question_id
    session.add_all([question, ask])
    if config.outbound_url:
        enqueue(session, "routed_question.asked_again", config.outbound_url,
                {"question_id": question.question_id, "ask": ask_view(ask), "ask_count": question.ask_count}, now=now)
    return HandoffOutcome(question.question_id, True, question.ask_count, question.status, ask.conversation_id or "", ask.trace_id)


def request_handoff(
    store: ContextStore,
    *,
    conversation_id: str,
    reason: str,
    transcript: list[Any],
    user_id: str | None = None,
    config: RoutingConfig | None = None,
    now: datetime | None = None,
) -> HandoffOutcome:
    """Open (or join) the conversation's hand-off question; raises ``InvalidRequest``/``TooLarge``/``UnknownUser``."""
    conversation_id = _checked_text(conversation_id, "conversation_id", MAX_CONVERSATION_ID_CHARS)
    reason = _checked_text(reason, "reason", MAX_REASON_CHARS)
    turns = check_turns(transcript)
    if not turns:
        raise InvalidRequest("transcript must hold at least one turn: the conversation so far")
    config = config or routing_config(store.settings)
    now = now or utcnow()
    with store.session() as session:
        user_version_id, facts = _user_memory(session, user_id)
        trace = latest_trace(session, conversation_id)
    context = served_context(store, trace)
    trace_id = trace.trace_id if trace is not None else None
    reasons = [Reason(HANDOFF_REQUESTED, reason, source="agent").as_dict()]
    with store.session() as session:
        lineage_lock(session, HANDOFF)  # two presses at once: the second waits, then joins the first
        ask = QuestionAsk(
            question_id="", text=_question_text(turns, reason), user_id=user_id, user_version_id=user_version_id,
            conversation_id=conversation_id, trace_id=trace_id, reasons=reasons, asked_at=now,
        )
        question = session.exec(
            select(RoutedQuestion).where(RoutedQuestion.kind == HANDOFF, RoutedQuestion.status == "open",
                                         RoutedQuestion.conversation_id == conversation_id)
        ).first()
        if question is not None:
            return _join(session, question, ask, turns, facts, context, config, now)
        question = RoutedQuestion(
            question_id="q-" + secrets.token_hex(8), status="open", kind=HANDOFF, text=ask.text, user_id=user_id,
            user_version_id=user_version_id, conversation_id=conversation_id, trace_id=trace_id, confidence=None,
            reasons=reasons, context=context, user_state=facts, transcript=turns, model="", vector=b"",
            created_at=now, updated_at=now,
        )
        ask.question_id = question.question_id
        session.add(question)
        session.flush()
        session.add(ask)
        if config.outbound_url:
            enqueue(session, "routed_question.created", config.outbound_url, question_view(question, [ask], None), now=now)
        return HandoffOutcome(question.question_id, False, 1, "open", conversation_id, trace_id)
