"""Outcomes: what happened after a response, stored with its trace.

A response is a promise; its outcome is what the user got. Outcomes arrive from the agent
platform (``record_outcome``: ``resolved``, ``unresolved``, ``reopened``,
``escalated_by_user``, ``abandoned``, with an optional CSAT 1-5, thumbs up/down and a
note) or are derived here: when ``respond()`` sees the same user come back with a similar
question (the repeat-contact trigger), ``record_repeat_contacts`` records ``repeat_contact``
(source ``derived``) on each earlier response the bot answered.

Rules every outcome passes, each with its own error code (``OutcomeRejected``):

* ``event_id`` is the sender's idempotency key: a repeat with the same content returns the
  first result and stores nothing (``duplicate: true``), also when two repeats race (the
  unique constraint decides, the loser reads the winner's row); the same id with other
  content is ``event_id_reused`` (409);
* it names one response: ``trace_id``, or ``conversation_id`` (the latest response of that
  conversation at the outcome's time); unknown ones are 404 ``unknown_trace`` /
  ``unknown_conversation`` — and so, with ``own_traces_only`` (an agent key), is another key's;
* ``at`` (default: now) may be neither ahead of our clock by more than
  ``outcomes.clock_skew_seconds`` (``outcome_in_future``) nor before the response itself
  (``outcome_before_trace``);
* a response takes at most ``outcomes.max_per_trace`` outcomes (``too_many_outcomes``, 429);
  counted in the inserting transaction, so exact on SQLite (one writer at a time), while on
  PostgreSQL writers racing at the cap may each add one.

A bot-answered response whose outcome says it failed (``unresolved``, ``reopened``,
``repeat_contact``, thumbs down, CSAT at or below ``outcomes.review_csat_max``) opens one
review (``route.reviews``), in the same transaction as the outcome.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from context_store._common import as_utc, sha256, utcnow
from context_store.errors import OutcomeRejected, UnknownConversation, UnknownTrace
from context_store.route.reviews import failure_of, open_review
from context_store.route.triggers import EarlierAsk
from context_store.settings import OutcomesConfig
from context_store.store.context_store import ContextStore
from context_store.store.models import Outcome, RetrievalTrace

__all__ = [
    "DERIVED_OUTCOMES",
    "OUTCOMES",
    "THUMBS",
    "OutcomeReport",
    "RecordedOutcome",
    "list_outcomes",
    "outcome_dict",
    "outcomes_for_trace",
    "record_outcome",
    "record_repeat_contacts",
    "succeeded",
]

OUTCOMES = ("resolved", "unresolved", "reopened", "escalated_by_user", "abandoned")
DERIVED_OUTCOMES = ("repeat_contact",)
THUMBS = ("up", "down")
_MAX_ID = 200
# any of these beside "resolved" means the user did not get what they needed the first time
_UNDOES_RESOLVED = ("unresolved", "reopened", "repeat_contact", "escalated_by_user")


def succeeded(outcomes: Iterable[str]) -> bool:
    """The one label of a response from its outcome kinds: resolved, without a repeat contact, reopen,
    ``unresolved`` or the user asking for a person. What the calibrator learns and the scorecard counts."""
    kinds = set(outcomes)
    return "resolved" in kinds and not kinds.intersection(_UNDOES_RESOLVED)


@dataclass(frozen=True)
class OutcomeReport:
    """One outcome as the agent platform reports it (``POST /v1/outcomes``, ``freshcontext``)."""

    event_id: str
    outcome: str
    trace_id: str | None = None
    conversation_id: str | None = None
    csat: int | None = None
    thumbs: str | None = None
    note: str | None = None
    at: datetime | str | None = None
    client: str | None = None  # the caller's key fingerprint

    def body_sha256(self) -> str:
        """What makes two reports with one ``event_id`` the same report (the caller's key is not part of it)."""
        at = self.at.isoformat() if isinstance(self.at, datetime) else self.at
        body = {"trace_id": self.trace_id, "conversation_id": self.conversation_id, "outcome": self.outcome,
                "csat": self.csat, "thumbs": self.thumbs, "note": self.note, "at": at}
        return sha256(json.dumps(body, sort_keys=True))


@dataclass
class RecordedOutcome:
    event_id: str
    trace_id: str
    conversation_id: str | None
    outcome: str
    source: str
    csat: int | None
    thumbs: str | None
    note: str | None
    at: datetime
    recorded_at: datetime
    review_question_id: str | None
    duplicate: bool = False

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["at"], out["recorded_at"] = self.at.isoformat(), self.recorded_at.isoformat()
        return out


def _recorded(row: Outcome, *, duplicate: bool = False) -> RecordedOutcome:
    return RecordedOutcome(row.event_id, row.trace_id, row.conversation_id, row.outcome, row.source, row.csat, row.thumbs,
                           row.note, row.at, row.recorded_at, row.review_question_id, duplicate)


def _check_values(report: OutcomeReport, config: OutcomesConfig) -> None:
    if not isinstance(report.event_id, str) or not report.event_id.strip() or len(report.event_id) > _MAX_ID:
        raise OutcomeRejected("invalid_event_id", f"event_id must be a non-empty string of at most {_MAX_ID} characters")
    if report.outcome not in OUTCOMES:
        hint = " (repeat_contact is derived by freshcontext itself)" if report.outcome in DERIVED_OUTCOMES else ""
        raise OutcomeRejected("invalid_outcome", f"outcome must be one of {', '.join(OUTCOMES)}, got {report.outcome!r}{hint}")
    if report.csat is not None and (isinstance(report.csat, bool) or not isinstance(report.csat, int) or not 1 <= report.csat <= 5):
        raise OutcomeRejected("invalid_csat", f"csat must be a whole number from 1 to 5, got {report.csat!r}")
    if report.thumbs is not None and report.thumbs not in THUMBS:
        raise OutcomeRejected("invalid_thumbs", f"thumbs must be 'up' or 'down', got {report.thumbs!r}")
    if report.note is not None and len(report.note) > config.max_note_chars:
        raise OutcomeRejected("note_too_long", f"note has {len(report.note)} characters; at most {config.max_note_chars} are kept")
    if not report.trace_id and not report.conversation_id:
        raise OutcomeRejected("missing_target", "name the response: trace_id (from /v1/retrieve) or conversation_id")


def _parse_at(value: datetime | str | None, now: datetime) -> datetime:
    if value is None or value == "":
        return now
    if isinstance(value, datetime):
        return as_utc(value)
    try:
        return as_utc(datetime.fromisoformat(str(value).strip().replace("Z", "+00:00")))
    except ValueError as exc:
        raise OutcomeRejected("invalid_time", f"at {value!r} is not an ISO-8601 date-time (e.g. 2026-03-01T12:00:00Z)") from exc


def _target(session: Session, report: OutcomeReport, at: datetime, skew: timedelta, *, own: bool) -> RetrievalTrace:
    """The response the outcome is about: the named trace, or the conversation's latest response at ``at``
    (with ``own``, only among the responses ``report.client`` recorded)."""
    if report.trace_id:
        trace = session.get(RetrievalTrace, report.trace_id)
        if trace is None or (own and trace.client != report.client):
            raise UnknownTrace(f"no response with trace_id {report.trace_id!r}; use the trace_id /v1/retrieve returned")
        if report.conversation_id and trace.conversation_id != report.conversation_id:
            raise OutcomeRejected("target_mismatch", f"trace {trace.trace_id} belongs to conversation "
                                  f"{trace.conversation_id!r}, not {report.conversation_id!r}")
        return trace
    by_conversation = select(RetrievalTrace).where(RetrievalTrace.conversation_id == report.conversation_id)
    if own:
        by_conversation = by_conversation.where(RetrievalTrace.client == report.client)
    trace = session.exec(
        by_conversation.where(col(RetrievalTrace.created_at) <= at).order_by(col(RetrievalTrace.created_at).desc()).limit(1)
    ).first()
    if trace is None:  # none before ``at``: the first response, when ``at`` is only a clock's skew before it
        trace = session.exec(by_conversation.order_by(col(RetrievalTrace.created_at)).limit(1)).first()
        if trace is None:
            raise UnknownConversation(f"no response was served in conversation {report.conversation_id!r} "
                                      "(send conversation_id with /v1/retrieve to report outcomes by conversation)")
        if trace.created_at > at + skew:
            raise OutcomeRejected("outcome_before_trace", f"at {at.isoformat()} is before the first response of conversation "
                                  f"{report.conversation_id!r} ({trace.created_at.isoformat()})")
    return trace


def _check_time(trace: RetrievalTrace, at: datetime, now: datetime, skew: timedelta) -> None:
    if at > now + skew:
        raise OutcomeRejected("outcome_in_future", f"at {at.isoformat()} is ahead of the server's clock ({now.isoformat()}) "
                              f"by more than {skew.total_seconds():g} s")
    if at < trace.created_at - skew:
        raise OutcomeRejected("outcome_before_trace", f"at {at.isoformat()} is before response {trace.trace_id} was served "
                              f"({trace.created_at.isoformat()})")


def _count(session: Session, trace_id: str) -> int:
    return int(session.exec(select(func.count()).select_from(Outcome).where(Outcome.trace_id == trace_id)).one())


def _existing(store: ContextStore, event_id: str, body: str) -> RecordedOutcome | None:
    with store.session() as session:
        row = session.exec(select(Outcome).where(Outcome.event_id == event_id)).first()
    if row is None:
        return None
    if row.body_sha256 != body:
        raise OutcomeRejected("event_id_reused", f"event_id {event_id!r} was already used for a different outcome "
                              f"({row.outcome} on {row.trace_id}); send a new event_id for a new outcome", status=409)
    return _recorded(row, duplicate=True)


def _insert(session: Session, row: dict[str, Any]) -> None:
    session.execute(insert(Outcome.__table__), [row])  # type: ignore[attr-defined]


def record_outcome(
    store: ContextStore, report: OutcomeReport, *, own_traces_only: bool = False, now: datetime | None = None,
) -> RecordedOutcome:
    """Validate and store one reported outcome (idempotent by ``event_id``); open a review when a bot answer failed.
    ``own_traces_only``: the caller (``report.client``) may only name responses its key recorded (an agent)."""
    config = store.settings.outcomes
    _check_values(report, config)
    body = report.body_sha256()
    found = _existing(store, report.event_id, body)
    if found is not None:
        return found
    now = now or utcnow()
    skew = timedelta(seconds=config.clock_skew_seconds)
    at = _parse_at(report.at, now)
    try:
        with store.session() as session:
            trace = _target(session, report, at, skew, own=own_traces_only)
            _check_time(trace, at, now, skew)
            if _count(session, trace.trace_id) >= config.max_per_trace:
                raise OutcomeRejected("too_many_outcomes", f"response {trace.trace_id} already has {config.max_per_trace} outcomes "
                                      "(outcomes.max_per_trace); report the latest state once", status=429)
            row = {"event_id": report.event_id, "trace_id": trace.trace_id, "conversation_id": report.conversation_id or trace.conversation_id,
                   "user_id": trace.user_id, "outcome": report.outcome, "source": "platform", "csat": report.csat,
                   "thumbs": report.thumbs, "note": report.note, "at": at, "recorded_at": now, "body_sha256": body,
                   "client": report.client}
            _insert(session, row)
            session.flush()  # a concurrent repeat fails here, before any review is opened
            failure = failure_of(report.outcome, thumbs=report.thumbs, csat=report.csat, csat_max=config.review_csat_max)
            row["review_question_id"] = open_review(store, session, trace, failure, at=at, now=now) if failure else None
            if row["review_question_id"]:
                session.execute(Outcome.__table__.update().where(Outcome.__table__.c.event_id == report.event_id)  # type: ignore[attr-defined]
                                .values(review_question_id=row["review_question_id"]))
    except IntegrityError:
        found = _existing(store, report.event_id, body)  # the same event, stored by a concurrent request
        if found is None:
            raise
        return found
    return _recorded(Outcome(**{k: v for k, v in row.items()}))


def record_repeat_contacts(
    store: ContextStore, earlier: list[EarlierAsk], *, trace_id: str, now: datetime | None = None, session: Session | None = None,
) -> list[RecordedOutcome]:
    """Mark each earlier bot-answered response the user came back about as ``repeat_contact`` (source ``derived``).

    ``trace_id`` is the new response (the repeat); ``session`` is ``respond()``'s transaction.
    A response already at ``outcomes.max_per_trace`` takes no more (a flood never fails a retrieval).
    """
    config = store.settings.outcomes
    now = now or utcnow()
    out: list[RecordedOutcome] = []
    answered = {a.trace_id: a for a in earlier if a.decision == "answer" and a.trace_id}
    with store.session(session) as session:
        for earlier_id, ask in answered.items():
            trace = session.get(RetrievalTrace, earlier_id)
            if trace is None or _count(session, earlier_id) >= config.max_per_trace:
                continue
            event_id = f"derived:repeat_contact:{earlier_id}:{trace_id}"
            row = {"event_id": event_id, "trace_id": earlier_id, "conversation_id": trace.conversation_id, "user_id": trace.user_id,
                   "outcome": "repeat_contact", "source": "derived", "at": now, "recorded_at": now, "body_sha256": sha256(event_id),
                   "detail": {"repeat_trace_id": trace_id, "similarity": round(ask.similarity, 4)}}
            _insert(session, row)
            row["review_question_id"] = open_review(store, session, trace, failure_of("repeat_contact"), at=now, now=now)
            if row["review_question_id"]:
                session.execute(Outcome.__table__.update().where(Outcome.__table__.c.event_id == event_id)  # type: ignore[attr-defined]
                                .values(review_question_id=row["review_question_id"]))
            out.append(_recorded(Outcome(**row)))
    return out


def outcome_dict(row: Outcome) -> dict[str, Any]:
    """The JSON shape of a stored outcome (API, CLI export)."""
    out = row.model_dump(exclude={"id", "body_sha256"})
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in out.items()}


def outcomes_for_trace(store: ContextStore, trace_id: str) -> list[dict[str, Any]]:
    with store.session() as session:
        rows = session.exec(select(Outcome).where(Outcome.trace_id == trace_id).order_by(col(Outcome.at), col(Outcome.id))).all()
        return [outcome_dict(r) for r in rows]


def list_outcomes(
    store: ContextStore, *, since: datetime | None = None, until: datetime | None = None, outcome: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Stored outcomes, oldest first, with the confidence and decision of the response each is about."""
    with store.session() as session:
        query = (select(Outcome, RetrievalTrace.confidence, RetrievalTrace.decision, RetrievalTrace.query)
                 .join(RetrievalTrace, col(RetrievalTrace.trace_id) == col(Outcome.trace_id))
                 .order_by(col(Outcome.at), col(Outcome.id)))
        if since is not None:
            query = query.where(col(Outcome.at) >= since)
        if until is not None:
            query = query.where(col(Outcome.at) < until)
        if outcome is not None:
            query = query.where(Outcome.outcome == outcome)
        if limit is not None:
            query = query.limit(limit)
        return [{**outcome_dict(o), "confidence": conf, "decision": decision, "query": q} for o, conf, decision, q in session.exec(query).all()]
