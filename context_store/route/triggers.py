"""Escalation policy: when a question should go to a person, as typed reasons.

Low calibrated confidence is decided by ``context_store.route.decision`` (the retrieval API).
This module adds the *outcome signals* a confidence score cannot see:

    repeat_contact     the same user asked about the same issue within a window (semantic)
    human_requested    the user asked for a person
    sensitive_topic    refund dispute, fraud, financial distress, legal threat, account lockout, ...
    stale_source       the best source is past its freshness SLA (review date or maximum age)
    stale_user_state   the user's snapshot is older than ``user_state_max_age_hours``
    staff_answer_needs_review  a served staff answer was flagged (a source it relied on changed)
                       and staff have neither re-approved nor retired it

Each reason is a ``route.decision.Reason`` (stable ``code``, human ``detail``, optional
``score``) that the API returns, the trace records and the routed question carries.
Phrases match literally (word boundaries, case-insensitive); examples match semantically
with the same embedder that serves retrieval, so "someone stole my card" hits fraud
without the word "fraud".
"""

from __future__ import annotations

import functools
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
from sqlalchemy import bindparam, or_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from context_store._common import as_utc, utcnow
from context_store.index.embed.protocol import Embedder
from context_store.retrieve.result import RetrievalResult
from context_store.route.decision import Reason
from context_store.route.policy import RoutingConfig, routing_config
from context_store.route.recording import Writes, writes_scope
from context_store.store.context_store import ContextStore
from context_store.store.models import AskedQuestion, DocumentVersion, StaffAnswer

__all__ = ["EarlierAsk", "escalation_reasons", "from_vector", "record_asked", "similar_earlier_asks", "to_vector"]

def _reason(code: str, detail: str, score: float | None = None) -> Reason:
    return Reason(code, detail, score, source="routing")


def to_vector(vector: np.ndarray) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.float32)


_EXAMPLES: dict[tuple[str, tuple[str, ...]], np.ndarray] = {}
_EXAMPLES_LOCK = threading.Lock()


def _example_matrix(embedder: Embedder, examples: list[str]) -> np.ndarray:
    """Example vectors, embedded once per (model, example list) for the life of the process."""
    key = (embedder.name, tuple(examples))
    with _EXAMPLES_LOCK:
        if key not in _EXAMPLES:
            _EXAMPLES[key] = embedder.encode(list(examples)) if examples else np.zeros((0, embedder.dim), np.float32)
        return _EXAMPLES[key]


@functools.lru_cache(maxsize=256)
def _phrase_patterns(phrases: tuple[str, ...]) -> tuple[re.Pattern[str] | None, tuple[tuple[str, re.Pattern[str]], ...]]:
    """One pattern for any of the phrases (most questions match none: one search per list, not one per
    phrase), and each phrase's own, to name the first of the list that matches as before."""
    words = [re.escape(p.lower()) for p in phrases]
    anyone = re.compile(r"(?<![a-z0-9])(?:" + "|".join(words) + r")(?![a-z0-9])") if words else None
    return anyone, tuple((p, re.compile(r"(?<![a-z0-9])" + w + r"(?![a-z0-9])")) for p, w in zip(phrases, words))


def _phrase_hit(text: str, phrases: list[str]) -> str | None:
    lowered = text.lower().replace("\u2019", "'")  # typographic apostrophes: can’t == can't
    anyone, each = _phrase_patterns(tuple(phrases))
    if anyone is None or not anyone.search(lowered):
        return None
    for phrase, pattern in each:
        if pattern.search(lowered):
            return phrase
    return None


def _best_example(embedder: Embedder, vector: np.ndarray, examples: list[str]) -> tuple[float, str | None]:
    matrix = _example_matrix(embedder, examples)
    if not len(matrix):
        return 0.0, None
    sims = matrix @ vector
    i = int(np.argmax(sims))
    return float(sims[i]), examples[i]


def escalation_reasons(
    store: ContextStore,
    embedder: Embedder,
    result: RetrievalResult,
    *,
    query_vector: np.ndarray | None = None,
    config: RoutingConfig | None = None,
    now: datetime | None = None,
    conversation_id: str | None = None,
) -> list[Reason]:
    """Every outcome-signal reason to hand ``result``'s question to a person (empty: none).

    Pass ``query_vector`` when the caller already embedded the query (the API does), so
    the policy costs no second model call. ``conversation_id`` excludes earlier turns of
    the same conversation from the repeat-contact check: a follow-up in one chat is not
    "coming back because the answer did not work".
    """
    config = config or routing_config(store.settings)
    now = now or utcnow()
    vector = embedder.encode([result.query])[0] if query_vector is None else np.asarray(query_vector, dtype=np.float32)
    reasons: list[Reason] = []

    phrase = _phrase_hit(result.query, config.human_phrases)
    score, example = _best_example(embedder, vector, config.human_examples)
    if phrase or score >= config.human_similarity:
        why = f"the user asked for a person ({'phrase ' + repr(phrase) if phrase else f'like {example!r}, similarity {score:.2f}'})"
        reasons.append(_reason("human_requested", why, round(score, 4)))

    for topic in config.sensitive_topics:
        phrase = _phrase_hit(result.query, topic.phrases)
        score, example = _best_example(embedder, vector, topic.examples)
        if phrase or score >= config.sensitive_similarity:
            why = f"sensitive topic {topic.name} ({'phrase ' + repr(phrase) if phrase else f'like {example!r}, similarity {score:.2f}'})"
            reasons.append(_reason("sensitive_topic", why, round(score, 4)))

    if result.user_id:
        repeat = _repeat_contact(store, embedder, result.user_id, vector, config, now, conversation_id)
        if repeat:
            reasons.append(repeat)
        if result.user_captured_at is not None:
            age_h = (now - result.user_captured_at).total_seconds() / 3600
            max_h = store.settings.user_state_max_age_hours
            if age_h > max_h:
                reasons.append(_reason(
                    "stale_user_state",
                    f"user {result.user_id}'s snapshot {result.user_version_id} is {age_h:.1f} h old; the limit is {max_h:g} h",
                    round(age_h, 2),
                ))

    if result.results:
        stale = _stale_source(store, result, config, now)
        if stale:
            reasons.append(stale)
        flagged = _answer_needs_review(store, result)
        if flagged:
            reasons.append(flagged)
    return reasons


def _answer_needs_review(store: ContextStore, result: RetrievalResult) -> Reason | None:
    """A flagged staff answer is never served as a confident answer: until staff re-approve or
    retire it (and until a retired one's document is tombstoned), a response that serves it
    escalates. One indexed look-up, only when a staff answer is served."""
    doc_ids = sorted({h.doc_id for h in result.results if h.kind == "staff_answer"})
    if not doc_ids:
        return None
    with store.session() as session:
        flagged = session.exec(
            select(StaffAnswer.doc_id, StaffAnswer.review_reason).where(
                col(StaffAnswer.doc_id).in_(doc_ids),
                or_(StaffAnswer.needs_review == True, col(StaffAnswer.retired_at).is_not(None)),  # noqa: E712
            )
        ).all()
    if not flagged:
        return None
    doc_id, why = flagged[0]
    return _reason("staff_answer_needs_review", f"staff answer {doc_id} awaits staff review: {why or 'a source it relied on changed'}")


@dataclass(frozen=True)
class EarlierAsk:
    """An earlier question of the same user that a new one repeats: what it was, when, and its trace."""

    similarity: float
    text: str
    asked_at: datetime
    trace_id: str | None
    decision: str | None


def similar_earlier_asks(
    store: ContextStore, model: str, user_id: str, vector: np.ndarray, config: RoutingConfig, now: datetime,
    conversation_id: str | None,
) -> list[EarlierAsk]:
    """The same user's earlier questions within the repeat window that ``vector`` repeats, most similar first.

    Earlier turns of the same conversation are follow-ups, not repeats; escalated questions are
    left out (a person already has them; grouping joins the new one to the open question). The
    repeat-contact trigger fires on these, and ``route.outcomes`` marks their answers as failed.
    """
    since = now - timedelta(hours=config.repeat_window_hours)
    with store.session() as session:
        rows = session.exec(
            select(AskedQuestion.text, AskedQuestion.vector, AskedQuestion.asked_at, AskedQuestion.conversation_id,
                   AskedQuestion.decision, AskedQuestion.trace_id)
            .where(AskedQuestion.user_id == user_id, AskedQuestion.model == model, col(AskedQuestion.asked_at) >= since)
            .order_by(col(AskedQuestion.asked_at).desc())
            .limit(200)
        ).all()
    similar = []
    for text, blob, asked_at, conv, decision, trace_id in rows:
        if (conversation_id is not None and conv == conversation_id) or decision == "escalate":
            continue
        earlier = from_vector(blob)
        if earlier.shape != vector.shape:
            continue
        sim = float(earlier @ vector)
        if sim >= config.repeat_similarity:
            similar.append(EarlierAsk(sim, text, asked_at, trace_id, decision))
    return sorted(similar, key=lambda a: (-a.similarity, a.asked_at))


def _repeat_contact(
    store: ContextStore, embedder: Embedder, user_id: str, vector: np.ndarray, config: RoutingConfig,
    now: datetime, conversation_id: str | None,
) -> Reason | None:
    similar = similar_earlier_asks(store, embedder.name, user_id, vector, config, now, conversation_id)
    if not similar:
        return None
    best = similar[0]
    hours = (now - best.asked_at).total_seconds() / 3600
    return _reason(
        "repeat_contact",
        f"user {user_id} asked {len(similar)} similar question(s) in the last {config.repeat_window_hours:g} h; "
        f"closest {hours:.1f} h ago (similarity {best.similarity:.2f}): {best.text[:120]!r}",
        round(best.similarity, 4),
    )


_DATE_KEYS_DEADLINE = ("review_by", "expires", "valid_until")
_DATE_KEYS_UPDATED = ("reviewed", "last_reviewed", "updated", "last_updated")
_DATES_OF_VERSION = sa_select(DocumentVersion.__table__.c.meta, DocumentVersion.__table__.c.valid_from).where(
    DocumentVersion.__table__.c.version_id == bindparam("version_id")
)


def _as_datetime(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return as_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=timezone.utc)
    if isinstance(value, str) and value.strip():
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return None
        return as_utc(parsed)
    return None


_VERSION_DATES: OrderedDict[tuple[str, str], tuple[dict[str, Any], datetime | None]] = OrderedDict()
_VERSION_DATES_LOCK = threading.Lock()


def _version_dates(store: ContextStore, version_id: str) -> tuple[dict[str, Any], datetime | None]:
    """A version's front matter and valid_from. Both are fixed when the version is written
    (a change makes a new version), so they are cached per process; the API asks on every answer."""
    key = (str(store.engine.url), version_id)
    with _VERSION_DATES_LOCK:
        found = _VERSION_DATES.get(key)
        if found is not None:
            _VERSION_DATES.move_to_end(key)
            return found
    with store.engine.connect() as conn:  # two columns, not the version row with its whole text
        row = conn.execute(_DATES_OF_VERSION, {"version_id": version_id}).first()
    if row is None:
        return {}, None  # not cached: a version that is not there yet may be soon
    meta = row[0] if isinstance(row[0], dict) else {}
    value = (meta, _as_datetime(row[1]))
    with _VERSION_DATES_LOCK:
        _VERSION_DATES[key] = value
        if len(_VERSION_DATES) > 20_000:
            _VERSION_DATES.popitem(last=False)
    return value


def _stale_source(store: ContextStore, result: RetrievalResult, config: RoutingConfig, now: datetime) -> Reason | None:
    """The top result's content is past its review date, or older than its source's maximum age."""
    best = result.results[0]
    meta, valid_from = _version_dates(store, best.version_id)
    for key in _DATE_KEYS_DEADLINE:
        deadline = _as_datetime(meta.get(key))
        if deadline is not None and deadline < now:
            return _reason("stale_source", f"best source {best.doc_id} was due for review on {deadline.date()} ({key})")
    changed = next((d for d in (_as_datetime(meta.get(k)) for k in _DATE_KEYS_UPDATED) if d is not None), None)
    changed = changed or best.source_changed_at or valid_from
    if changed is None:
        return None
    source_name = best.doc_id.split("/", 1)[0]
    max_days = config.source_max_age_days.get(source_name, config.source_max_age_days.get("default"))
    if max_days is None:
        return None
    age_days = (now - _as_datetime(changed)).total_seconds() / 86400  # type: ignore[operator]
    if age_days > max_days:
        return _reason(
            "stale_source",
            f"best source {best.doc_id} was last changed {age_days:.0f} days ago; its freshness SLA is {max_days:g} days",
            round(age_days, 1),
        )
    return None


def record_asked(
    store: ContextStore,
    result: RetrievalResult,
    *,
    vector: np.ndarray,
    model: str,
    decision: str | None,
    confidence: float | None = None,
    reasons: list[Reason] | None = None,
    question_id: str | None = None,
    trace_id: str | None = None,
    conversation_id: str | None = None,
    now: datetime | None = None,
    session: Session | Writes | None = None,
) -> None:
    """Log an assessed question after the policy ran (so it never matches itself as a repeat)."""
    top = result.results[0] if result.results else None
    row = {
        "user_id": result.user_id, "conversation_id": conversation_id, "text": result.query, "model": model,
        "vector": to_vector(vector), "asked_at": now or utcnow(), "decision": decision, "confidence": confidence,
        "reasons": [r.code for r in reasons or []], "top_doc_id": top.doc_id if top else None,
        "top_kind": top.kind if top else None, "question_id": question_id, "trace_id": trace_id,
    }
    # A Core row, as the trace's: no ORM unit of work on every request.
    with writes_scope(store.engine, session) as writes:
        writes.add(AskedQuestion.__table__, row)  # type: ignore[attr-defined]
