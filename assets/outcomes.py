"""Outcomes as Dagster sees them: the resolution scorecard and the calibrator learned from outcomes.

``resolution_scorecard`` stores the scorecard (``measure.resolution``) in ``evaluation_runs``
and returns every number as metadata, so the UI plots task success, repeat contact and the
confidence-outcome gap across materializations; one asset check per number judges it
against its floor or ceiling (``settings.outcomes``).

``outcome_calibration`` fits a candidate calibrator on outcomes and judges it against the one
in use on held-out answers (``measure.outcome_calibration``); its blocking check
``calibrator_at_least_as_good`` fails when the candidate's held-out ECE or coverage is worse,
which stops ``outcome_calibrator`` — the asset that installs it as ``calibrator.json``, where
the running API picks it up without a restart. Too few outcomes is not a failure: nothing is
fitted, and the metadata says how many are needed.
"""

from typing import Any

import dagster as dg

from assets.metadata import md_table, metric_value
from assets.resources import StoreResource
from context_store.errors import TooFewOutcomes
from context_store.measure import (
    CANDIDATE_FILE,
    CHECK_NAMES,
    RATE_KEYS,
    CheckOutcome,
    calibrate_from_outcomes,
    promote_candidate,
    record_evaluation,
    resolution_checks,
    resolution_scorecard,
)

__all__ = ["outcome_calibration", "outcome_calibrator", "resolution_scorecard_asset"]

_DESCRIPTIONS = {
    "task_success_above_floor": "Responses whose outcomes say resolved, at or above the floor.",
    "first_contact_resolution_above_floor": "Resolved by the first (bot) answer, at or above the floor.",
    "repeat_contact_under_ceiling": "Bot answers the user came back about, at or under the ceiling.",
    "reopen_under_ceiling": "Resolved responses reopened, at or under the ceiling.",
    "escalation_success_above_floor": "Escalations answered by staff and then resolved, at or above the floor.",
    "owner_assignment_above_floor": "Routed questions with an owner, at or above the floor.",
    "time_to_resolve_p95_under_ceiling": "Asked to resolved, p95, at or under the ceiling.",
    "confidence_outcome_gap_under_ceiling": "ECE of the served confidence on outcomes, at or under the ceiling.",
}


def _check(outcome: CheckOutcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=outcome.name, passed=outcome.passed, severity=dg.AssetCheckSeverity.ERROR, description=outcome.detail,
        metadata={"value": metric_value(outcome.value), "threshold": metric_value(outcome.threshold)},
    )


@dg.asset(
    name="resolution_scorecard",
    group_name="quality",
    kinds={"python"},
    check_specs=[dg.AssetCheckSpec(name, asset="resolution_scorecard", description=_DESCRIPTIONS[name]) for name in CHECK_NAMES],
)
def resolution_scorecard_asset(store: StoreResource) -> dg.MaterializeResult:
    """What users got over the scorecard window: resolution rates, time to resolve, escalation success, confidence gap."""
    cs = store.open()
    card = resolution_scorecard(cs)
    outcomes = resolution_checks(card, cs.settings.outcomes)
    numbers = {k: v for k, v in card.items() if isinstance(v, (int, float)) and not isinstance(v, bool) or (v is None and k in RATE_KEYS)}
    record_evaluation(cs, kind="resolution", set_name="outcomes", metrics={k: v for k, v in numbers.items() if v is not None},
                      passed=all(o.passed for o in outcomes), details={"outcomes_by_kind": card["outcomes_by_kind"]}, trigger=store.trigger)
    metadata: dict[str, Any] = {k: metric_value(v) for k, v in numbers.items()}
    metadata["outcomes_by_kind"] = md_table(["outcome", "count"], [[k, n] for k, n in card["outcomes_by_kind"].items()])
    metadata["daily"] = md_table(
        ["day", "responses", "with outcome", "task success", "repeat contact", "confidence gap"],
        [[d["day"], d["responses"], d["responses_with_outcome"], _pct(d["task_success_rate"]), _pct(d["repeat_contact_rate"]),
          "—" if d["confidence_outcome_gap"] is None else round(d["confidence_outcome_gap"], 3)] for d in card["daily"][-14:]],
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[_check(o) for o in outcomes])


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


@dg.asset(
    group_name="quality",
    kinds={"python"},
    check_specs=[dg.AssetCheckSpec(
        "calibrator_at_least_as_good", asset="outcome_calibration", blocking=True,
        description="The calibrator fitted on outcomes has a held-out ECE no worse and a coverage at the target precision "
                    "no lower than the one in use; only then is it installed.",
    )],
)
def outcome_calibration(store: StoreResource) -> dg.MaterializeResult:
    """A calibrator fitted on served answers and their outcomes, with its threshold, judged against the one in use."""
    cs = store.open()
    candidate_path = cs.settings.home / CANDIDATE_FILE
    try:
        result = calibrate_from_outcomes(cs)
    except TooFewOutcomes as exc:
        candidate_path.unlink(missing_ok=True)  # an older candidate must not be promoted later
        return dg.MaterializeResult(
            metadata={"fitted": False, "reason": str(exc), "labelled_answers": exc.found, "needed": exc.needed},
            check_results=[dg.AssetCheckResult(check_name="calibrator_at_least_as_good", passed=True,
                                               description=f"nothing fitted: {exc}", metadata={"fitted": False})],
        )
    result.candidate.save(candidate_path)
    record_evaluation(cs, kind="outcome_calibration", set_name="outcomes", passed=result.passed, trigger=store.trigger,
                      metrics={f"{side}_{k}": v for side, score in (("old", result.old), ("new", result.new))
                               for k, v in vars(score).items() if isinstance(v, (int, float))} | {"served_ece": result.served_ece},
                      details={"reason": result.reason})
    metadata: dict[str, Any] = {"fitted": True, "train": result.train, "heldout": result.heldout, "target_precision": result.target_precision,
                                "served_ece": metric_value(result.served_ece), "verdict": result.reason}
    for side, score in (("old", result.old), ("new", result.new)):
        for key in ("threshold", "ece", "coverage_at_target", "answer_rate", "precision"):
            metadata[f"{side}_{key}"] = metric_value(getattr(score, key))
    check = dg.AssetCheckResult(
        check_name="calibrator_at_least_as_good", passed=result.passed, severity=dg.AssetCheckSeverity.ERROR, description=result.reason,
        metadata={"new_ece": metric_value(result.new.ece), "old_ece": metric_value(result.old.ece),
                  "new_coverage": metric_value(result.new.coverage_at_target), "old_coverage": metric_value(result.old.coverage_at_target)},
    )
    return dg.MaterializeResult(metadata=metadata, check_results=[check])


@dg.asset(group_name="quality", deps=[outcome_calibration], kinds={"python"})
def outcome_calibrator(store: StoreResource) -> dg.MaterializeResult:
    """Install the outcome-fitted calibrator as calibrator.json — only when its evaluation passed (the blocking check
    stops this asset in the same run; a run started any other way is stopped by the verdict stored with the candidate)."""
    cs = store.open()
    promoted, reason = promote_candidate(cs)
    return dg.MaterializeResult(metadata={"promoted": promoted, "reason": reason})
