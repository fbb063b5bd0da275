"""Outcomes as Dagster sees them: the resolution scorecard and the calibrator learned from outcomes.

``resolution_scorecard`` stores the scorecard (``measure.resolution``) in ``evaluation_runs``
and returns every number as metadata, so the UI plots task success, repeat contact and the
confidence-outcome gap across materializations; one asset check per number judges it
against its floor or ceiling (``settings.outcomes``).
"""

from typing import Any

import dagster as dg

from assets.metadata import md_table, metric_value
from assets.resources import StoreResource
from context_store.measure.quality import CheckOutcome, record_evaluation
from context_store.measure.resolution import CHECK_NAMES, RATE_KEYS, resolution_checks, resolution_scorecard

__all__ = ["resolution_scorecard_asset"]

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
