"""Confidence learned from outcomes: fit the calibrator on what users got, and promote it only when it is better.

The labelled set is every response the bot answered (``decision = answer``, not an audit)
that has at least one outcome; its features are the ones the decision was made on (stored
with the trace) and its label is ``route.succeeded`` (resolved, without a repeat contact,
reopen, ``unresolved`` or request for a person). Escalated responses are left out: what
happened after a person took over says nothing about whether the bot's context would have
answered. (So outcomes can only teach the calibrator about the region it already answers;
the golden set, ``calibrate_on_questions``, covers the rest.)

The split is by time: the oldest ``1 - outcomes.holdout_share`` of the labelled responses fit
the new calibrator and choose its threshold (the lowest that reaches ``target_precision`` on
them, ``ir_metrics.threshold_at_precision``); the newest are held out, and both calibrators —
the one in use (or the conservative default) at its threshold and the new one at its own —
are scored there: ECE (``ir_metrics``), coverage at the target precision, and answer rate
and precision at the operating threshold. The new one is promoted only when its held-out ECE
is no worse and its coverage no lower (``outcomes.promotion_tolerance``). Too few labelled
responses (``outcomes.min_outcomes``, ``min_per_class`` of each label) is ``TooFewOutcomes``,
which says how many are needed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from sqlmodel import col, select

from context_store._common import sha256, utcnow
from context_store.errors import TooFewOutcomes
from context_store.measure.ir_metrics import coverage_at_precision, expected_calibration_error, threshold_at_precision
from context_store.route.confidence import CALIBRATOR_FILE, Calibrator, default_confidence, fit_calibrator, load_calibrator
from context_store.route.outcomes import succeeded
from context_store.store.context_store import ContextStore
from context_store.store.models import Outcome, RetrievalTrace

__all__ = [
    "CANDIDATE_FILE",
    "LabelledResponse",
    "OutcomeCalibration",
    "PolicyScore",
    "calibrate_from_outcomes",
    "fit_with_threshold",
    "labelled_responses",
    "promote_candidate",
    "score_policy",
]

CANDIDATE_FILE = "calibrator.candidate.json"


@dataclass
class LabelledResponse:
    trace_id: str
    created_at: datetime
    features: dict[str, float]
    served_confidence: float
    succeeded: bool


def labelled_responses(store: ContextStore, *, since: datetime | None = None, until: datetime | None = None) -> list[LabelledResponse]:
    """Bot answers with at least one outcome, oldest first, labelled by ``route.succeeded``."""
    with store.session() as session:
        query = (select(RetrievalTrace.trace_id, RetrievalTrace.created_at, RetrievalTrace.features, RetrievalTrace.confidence, Outcome.outcome)
                 .join(Outcome, col(Outcome.trace_id) == col(RetrievalTrace.trace_id))
                 .where(RetrievalTrace.decision == "answer", col(RetrievalTrace.as_of).is_(None), col(RetrievalTrace.features).is_not(None)))
        if since is not None:
            query = query.where(col(RetrievalTrace.created_at) >= since)
        if until is not None:
            query = query.where(col(RetrievalTrace.created_at) < until)
        rows = session.exec(query).all()
    kinds: dict[str, set[str]] = {}
    first: dict[str, tuple[datetime, dict[str, float], float]] = {}
    for trace_id, created, features, confidence, kind in rows:
        kinds.setdefault(trace_id, set()).add(kind)
        first.setdefault(trace_id, (created, features, confidence))
    out = [LabelledResponse(t, *first[t], succeeded(k)) for t, k in kinds.items()]
    return sorted(out, key=lambda r: (r.created_at, r.trace_id))


@dataclass
class PolicyScore:
    """One calibrator (at its threshold) on held-out responses."""

    name: str
    threshold: float
    ece: float
    coverage_at_target: float
    answer_rate: float
    precision: float | None
    n: int


def score_policy(name: str, scores: np.ndarray, labels: np.ndarray, threshold: float, target: float) -> PolicyScore:
    answered = scores >= threshold
    return PolicyScore(
        name, round(float(threshold), 4), round(expected_calibration_error(scores.tolist(), labels.tolist()), 4),
        round(coverage_at_precision(scores, labels, target), 4), round(float(answered.mean()) if len(scores) else 0.0, 4),
        round(float(labels[answered].mean()), 4) if answered.any() else None, len(scores),
    )


def fit_with_threshold(features: list[dict[str, float]], labels: list[bool], target: float, **info: Any) -> Calibrator:
    """A calibrator and the lowest threshold at which its answers on ``features`` reach ``target`` precision
    (1.0, answer nothing, when none does)."""
    calibrator = fit_calibrator(features, labels, **info)
    scores = np.array([calibrator.predict(f) for f in features])
    threshold = threshold_at_precision(scores, np.asarray(labels, bool), target)
    calibrator.threshold = round(min(1.0, float(threshold)), 6)
    calibrator.target_precision = target
    return calibrator


@dataclass
class OutcomeCalibration:
    candidate: Calibrator
    old: PolicyScore
    new: PolicyScore
    served_ece: float  # what the API actually served on the held-out responses
    train: int
    heldout: int
    positives: int
    target_precision: float
    passed: bool
    reason: str
    current_sha256: str | None  # the calibrator file the verdict compared against
    since: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "candidate"}
        out["candidate"] = {"threshold": self.candidate.threshold, "coef": dict(zip(self.candidate.features, self.candidate.coef)),
                            "samples": self.candidate.samples, "positive_rate": self.candidate.positive_rate}
        return out


def _need(rows: list[LabelledResponse], min_total: int, min_class: int, since: datetime | None) -> None:
    good = sum(r.succeeded for r in rows)
    bad = len(rows) - good
    if len(rows) < min_total or good < min_class or bad < min_class:
        period = f" since {since.date()}" if since else ""
        raise TooFewOutcomes(
            f"too few labelled bot answers to fit a calibrator{period}: {len(rows)} ({good} succeeded, {bad} failed); "
            f"it needs at least {min_total}, with at least {min_class} of each (settings: outcomes.min_outcomes, "
            "outcomes.min_per_class). Report outcomes with POST /v1/outcomes, or fit on a golden set.",
            needed=min_total, found=len(rows),
        )


def _file_sha(path: Path) -> str | None:
    return sha256(path.read_bytes()) if path.exists() else None


def calibrate_from_outcomes(
    store: ContextStore, *, since: datetime | None = None, target_precision: float | None = None, now: datetime | None = None,
) -> OutcomeCalibration:
    """Fit on the older labelled responses, judge old and new on the newer ones; nothing is written."""
    config = store.settings.outcomes
    target = target_precision if target_precision is not None else config.target_precision
    rows = labelled_responses(store, since=since, until=now)
    _need(rows, config.min_outcomes, config.min_per_class, since)
    cut = int(round(len(rows) * (1 - config.holdout_share)))
    train, test = rows[:cut], rows[cut:]
    _need(train, max(10, int(config.min_outcomes * (1 - config.holdout_share))), config.min_per_class, since)
    candidate = fit_with_threshold(
        [r.features for r in train], [r.succeeded for r in train], target, k=store.settings.quality.k, mode=store.settings.retrieval.mode,
        model=store.settings.embedding.model, fitted_on=f"outcomes since {since.date() if since else 'the start'} ({len(train)} answers)",
    )
    path = store.settings.home / CALIBRATOR_FILE
    current = load_calibrator(path)
    y = np.array([r.succeeded for r in test], bool)
    if current is not None:
        old_scores = np.array([current.predict(r.features) for r in test])
        old_threshold = current.threshold if current.threshold is not None else store.settings.retrieval.confidence_threshold
    else:
        old_scores = np.array([default_confidence(r.features) for r in test])
        old_threshold = store.settings.retrieval.confidence_threshold
    old = score_policy("in use" if current else "conservative default", old_scores, y, old_threshold, target)
    new = score_policy("from outcomes", np.array([candidate.predict(r.features) for r in test]), y, candidate.threshold or 1.0, target)
    served = expected_calibration_error([r.served_confidence for r in test], y.tolist())
    tol = config.promotion_tolerance
    better_ece, better_cov = new.ece <= old.ece + tol, new.coverage_at_target >= old.coverage_at_target - tol
    reason = (f"held-out ECE {new.ece:.3f} vs {old.ece:.3f} ({'ok' if better_ece else 'worse'}), coverage at {target:.0%} "
              f"precision {new.coverage_at_target:.3f} vs {old.coverage_at_target:.3f} ({'ok' if better_cov else 'lower'}) on {len(test)} answers")
    candidate.heldout_ece = new.ece
    result = OutcomeCalibration(candidate, old, new, round(served, 4), len(train), len(test), int(sum(r.succeeded for r in rows)), target,
                                better_ece and better_cov, reason, _file_sha(path), since.isoformat() if since else None)
    candidate.evaluation = {k: v for k, v in result.as_dict().items() if k != "candidate"} | {"evaluated_at": (now or utcnow()).isoformat()}
    return result


def promote_candidate(store: ContextStore, *, candidate_path: Path | None = None) -> tuple[bool, str]:
    """Install the evaluated candidate as ``calibrator.json`` — only when its verdict passed and the calibrator
    it was judged against is still the one in use. The running API picks the file up by itself."""
    home = store.settings.home
    source = candidate_path or home / CANDIDATE_FILE
    if not source.exists():
        return False, "no candidate calibrator (the last outcome calibration fitted none)"
    candidate = load_calibrator(source)
    verdict = (candidate.evaluation or {}) if candidate is not None else {}
    if not verdict.get("passed"):
        return False, f"the candidate's verdict did not pass: {verdict.get('reason', 'never evaluated')}"
    target = home / CALIBRATOR_FILE
    if _file_sha(target) != verdict.get("current_sha256"):
        return False, "calibrator.json changed after the candidate was evaluated; evaluate again"
    tmp = target.with_suffix(".promote")
    tmp.write_text(json.dumps(json.loads(source.read_text(encoding="utf-8")), indent=2), encoding="utf-8")
    tmp.replace(target)
    return True, f"promoted: {verdict.get('reason', '')}"
