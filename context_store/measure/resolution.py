"""The resolution scorecard: what users got, per day and over a window — not what the company saved.

Every number is about responses served in the window (traces, audits left out) and what
came of them (outcomes recorded up to the window's end):

* ``task_success_rate``: responses whose outcomes say resolved (``route.succeeded``: no
  repeat contact, reopen, ``unresolved`` or request for a person beside it), over responses
  with any outcome;
* ``first_contact_resolution``: of those, resolved by the first answer the user got: answered
  by the bot (not escalated) and succeeded;
* ``repeat_contact_rate``: bot answers to an identified user that the user came back about
  (derived ``repeat_contact``), over bot answers to identified users;
* ``reopen_rate``: responses reopened, over responses ever resolved (a reopen says it was);
* ``time_to_resolve_p50_s`` / ``_p95_s``: asked → the first ``resolved`` outcome or the staff
  answer to its escalation, whichever came first;
* ``escalation_success_rate``: escalated responses whose question staff answered and that
  were resolved after the answer, over escalated responses;
* ``owner_assignment_rate``: routed questions opened in the window that have an owner (or an
  answer, whose author owned it), over routed questions opened in the window;
* ``confidence_outcome_gap``: the ECE (``ir_metrics``) of the confidence the API served for
  its bot answers, against whether they succeeded — confident answers that fail widen it.

``resolution_checks`` judges each against its floor or ceiling (``settings.outcomes``) once
there are enough outcomes to judge (``scorecard_min_outcomes``); below that a check passes and
says how many it is waiting for.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import col, select

from context_store._common import percentile, utcnow
from context_store.measure.checks import CheckOutcome
from context_store.measure.ir_metrics import expected_calibration_error
from context_store.route.outcomes import succeeded
from context_store.settings import OutcomesConfig
from context_store.store.context_store import ContextStore
from context_store.store.models import Outcome, QuestionAsk, RetrievalTrace, RoutedQuestion, StaffAnswer

__all__ = ["RATE_KEYS", "ResponseRecord", "resolution_checks", "resolution_scorecard", "scorecard_of"]

RATE_KEYS = ("task_success_rate", "first_contact_resolution", "repeat_contact_rate", "reopen_rate", "escalation_success_rate",
             "owner_assignment_rate", "confidence_outcome_gap")


@dataclass
class ResponseRecord:
    """One served response and what came of it: the unit every scorecard number counts."""

    trace_id: str
    created_at: datetime
    decision: str
    confidence: float
    user_id: str | None
    outcomes: list[tuple[datetime, str]] = field(default_factory=list)  # (at, kind), oldest first
    staff_answered_at: datetime | None = None  # the answer to its escalation, if staff answered it

    @property
    def kinds(self) -> set[str]:
        return {kind for _, kind in self.outcomes}

    def resolved_at(self) -> datetime | None:
        """When the user's problem was solved: the first resolved outcome or the staff answer, whichever came first."""
        times = [at for at, kind in self.outcomes if kind == "resolved"]
        if self.staff_answered_at is not None:
            times.append(self.staff_answered_at)
        return min(times) if times else None


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def scorecard_of(records: list[ResponseRecord], *, questions: int = 0, owned: int = 0) -> dict[str, Any]:
    """Every scorecard number for ``records`` (and the routed questions opened in the same period)."""
    judged = [r for r in records if r.outcomes]
    answered = [r for r in records if r.decision == "answer"]
    identified = [r for r in answered if r.user_id]
    ever_resolved = [r for r in judged if r.kinds & {"resolved", "reopened"}]  # a reopen says it had been closed
    escalated = [r for r in records if r.decision == "escalate"]
    rescued = [r for r in escalated if r.staff_answered_at is not None
               and any(kind == "resolved" and at >= r.staff_answered_at for at, kind in r.outcomes)]
    gap_rows = [(r.confidence, succeeded(r.kinds)) for r in answered if r.outcomes]
    to_resolve = [(t - r.created_at).total_seconds() for r in records if (t := r.resolved_at()) is not None]
    by_kind: dict[str, int] = defaultdict(int)
    for r in records:
        for _, kind in r.outcomes:
            by_kind[kind] += 1
    return {
        "responses": len(records), "responses_with_outcome": len(judged), "bot_answers": len(answered), "escalated": len(escalated),
        "outcomes": sum(by_kind.values()), "outcomes_by_kind": dict(sorted(by_kind.items())),
        "task_success_rate": _ratio(sum(succeeded(r.kinds) for r in judged), len(judged)),
        "first_contact_resolution": _ratio(sum(r.decision == "answer" and succeeded(r.kinds) for r in judged), len(judged)),
        "repeat_contact_rate": _ratio(sum("repeat_contact" in r.kinds for r in identified), len(identified)),
        "identified_bot_answers": len(identified),
        "reopen_rate": _ratio(sum("reopened" in r.kinds for r in ever_resolved), len(ever_resolved)),
        "ever_resolved": len(ever_resolved),
        "time_to_resolve_p50_s": percentile(to_resolve, 50), "time_to_resolve_p95_s": percentile(to_resolve, 95),
        "resolved": len(to_resolve),
        "escalation_success_rate": _ratio(len(rescued), len(escalated)),
        "owner_assignment_rate": _ratio(owned, questions), "questions": questions,
        "confidence_outcome_gap": expected_calibration_error([c for c, _ in gap_rows], [y for _, y in gap_rows]) if gap_rows else None,
        "confidence_outcome_n": len(gap_rows),
    }


def _records(store: ContextStore, since: datetime, until: datetime) -> list[ResponseRecord]:
    with store.session() as session:
        traces = session.exec(
            select(RetrievalTrace.trace_id, RetrievalTrace.created_at, RetrievalTrace.decision, RetrievalTrace.confidence,
                   RetrievalTrace.user_id)
            .where(col(RetrievalTrace.created_at) >= since, col(RetrievalTrace.created_at) < until, col(RetrievalTrace.as_of).is_(None))
        ).all()
        records = {t[0]: ResponseRecord(*t) for t in traces}
        for trace_id, at, kind in session.exec(
            select(Outcome.trace_id, Outcome.at, Outcome.outcome).join(RetrievalTrace, col(RetrievalTrace.trace_id) == col(Outcome.trace_id))
            .where(col(RetrievalTrace.created_at) >= since, col(RetrievalTrace.created_at) < until, col(Outcome.at) < until)
            .order_by(col(Outcome.at))
        ).all():
            if trace_id in records:
                records[trace_id].outcomes.append((at, kind))
        for trace_id, received in session.exec(
            select(QuestionAsk.trace_id, StaffAnswer.received_at)
            .join(RoutedQuestion, col(RoutedQuestion.question_id) == col(QuestionAsk.question_id))
            .join(StaffAnswer, col(StaffAnswer.question_id) == col(RoutedQuestion.question_id))
            .where(RoutedQuestion.kind == "escalation", col(QuestionAsk.asked_at) >= since, col(StaffAnswer.received_at) < until)
        ).all():
            if trace_id in records:
                records[trace_id].staff_answered_at = received
    return sorted(records.values(), key=lambda r: r.created_at)


def _questions(store: ContextStore, since: datetime, until: datetime) -> list[tuple[datetime, bool]]:
    """(opened, owned) for every routed question opened in the window."""
    with store.session() as session:
        rows = session.exec(
            select(RoutedQuestion.created_at, RoutedQuestion.owner, StaffAnswer.answer_id)
            .join(StaffAnswer, col(StaffAnswer.question_id) == col(RoutedQuestion.question_id), isouter=True)
            .where(col(RoutedQuestion.created_at) >= since, col(RoutedQuestion.created_at) < until)
        ).all()
    return [(created, bool(owner) or answer is not None) for created, owner, answer in rows]


def resolution_scorecard(store: ContextStore, *, days: float | None = None, now: datetime | None = None) -> dict[str, Any]:
    """The scorecard over the last ``days`` (default ``outcomes.scorecard_days``) and per day, JSON-ready."""
    now = now or utcnow()
    days = days if days is not None else store.settings.outcomes.scorecard_days
    since = now - timedelta(days=days)
    records = _records(store, since, now)
    questions = _questions(store, since, now)
    per_day: dict[str, list[ResponseRecord]] = defaultdict(list)
    for r in records:
        per_day[r.created_at.date().isoformat()].append(r)
    questions_per_day: dict[str, list[bool]] = defaultdict(list)
    for created, owned in questions:
        questions_per_day[created.date().isoformat()].append(owned)
    daily = []
    for day in sorted(set(per_day) | set(questions_per_day)):
        owned = questions_per_day.get(day, [])
        daily.append({"day": day, **scorecard_of(per_day.get(day, []), questions=len(owned), owned=sum(owned))})
    window = scorecard_of(records, questions=len(questions), owned=sum(owned for _, owned in questions))
    return {"window_days": days, "since": since.isoformat(), "until": now.isoformat(), **window, "daily": daily}


_CHECKS = (  # (check, metric, settings field, is a floor, what the denominator counts)
    ("task_success_above_floor", "task_success_rate", "task_success_floor", True, "responses_with_outcome"),
    ("first_contact_resolution_above_floor", "first_contact_resolution", "first_contact_resolution_floor", True, "responses_with_outcome"),
    ("repeat_contact_under_ceiling", "repeat_contact_rate", "repeat_contact_rate_max", False, "identified_bot_answers"),
    ("reopen_under_ceiling", "reopen_rate", "reopen_rate_max", False, "ever_resolved"),
    ("escalation_success_above_floor", "escalation_success_rate", "escalation_success_floor", True, "escalated"),
    ("owner_assignment_above_floor", "owner_assignment_rate", "owner_assignment_floor", True, "questions"),
    ("time_to_resolve_p95_under_ceiling", "time_to_resolve_p95_s", "time_to_resolve_p95_max_s", False, "resolved"),
    ("confidence_outcome_gap_under_ceiling", "confidence_outcome_gap", "confidence_outcome_gap_max", False, "confidence_outcome_n"),
)
CHECK_NAMES = tuple(c[0] for c in _CHECKS)
__all__ += ["CHECK_NAMES"]


def resolution_checks(card: dict[str, Any], config: OutcomesConfig) -> list[CheckOutcome]:
    """One outcome per scorecard number against its floor or ceiling; too little data to judge passes and says so."""
    out = []
    for name, metric, setting, floor, base in _CHECKS:
        limit, value, n = float(getattr(config, setting)), card.get(metric), int(card.get(base) or 0)
        if value is None or n < config.scorecard_min_outcomes:
            out.append(CheckOutcome(name, True, f"{metric}: {n} of {config.scorecard_min_outcomes} needed to judge", value, limit))
            continue
        passed = value >= limit if floor else value <= limit
        out.append(CheckOutcome(name, passed, f"{metric} {value:.3f} ({'floor' if floor else 'ceiling'} {limit:g}, n={n})", value, limit))
    return out
