"""Quality as Dagster sees it: evaluation assets, their checks, and the index promotion gate.

Each asset stores its numbers in ``evaluation_runs`` (for the report) and returns them as
numeric metadata, so the UI plots every one of them across materializations. They run
after every index change (declarative automation: ``eager``) and on the quality schedule.
"""

from typing import Any

import dagster as dg

from assets.ingestion import company_chunk_index, user_state_index
from assets.learning import staff_answer_review
from assets.metadata import md_table, metric_value
from assets.resources import EmbedderResource, StoreResource
from context_store.index import build_candidate
from context_store.learn import learning_metrics
from context_store.measure import (
    CheckOutcome,
    baselines,
    evaluate_gate,
    evaluate_retrieval_quality,
    evaluate_routing_quality,
    gate_is_current,
    last_gate,
    learning_checks,
    pending_change,
    promote,
    record_evaluation,
    resolution_scorecard,
    retrieval_checks,
    routing_checks,
    store_retrieval_quality,
)

__all__ = ["QUALITY_AUTOMATION", "index_candidate", "index_promotion", "learning_report", "retrieval_quality", "routing_quality"]

QUALITY_AUTOMATION = dg.AutomationCondition.eager()


_num = metric_value  # Dagster plots numbers only; NaN keeps "no data" apart from a real 0


def _result(name: str, outcomes: list[CheckOutcome], severity: dg.AssetCheckSeverity, empty: str) -> dg.AssetCheckResult:
    failed = [o for o in outcomes if not o.passed]
    return dg.AssetCheckResult(
        check_name=name,
        passed=not failed,
        severity=severity,
        description="; ".join(o.detail for o in failed[:5]) if failed else (empty if not outcomes else f"{len(outcomes)} conditions hold"),
        metadata={
            "conditions": len(outcomes),
            "failed": len(failed),
            "detail": md_table(["condition", "value", "threshold", "ok"], [
                [o.name, "—" if o.value is None else round(o.value, 4), "—" if o.threshold is None else round(o.threshold, 4), "yes" if o.passed else "NO"]
                for o in outcomes
            ]) if outcomes else dg.MetadataValue.md(f"_{empty}_"),
        },
    )


def _worst_table(worst: list[dict[str, Any]]) -> dg.MetadataValue:
    if not worst:
        return dg.MetadataValue.md("_every question ranked its expected document first_")
    return md_table(
        ["question", "expected", "came back (top 3)", "rank of expected", "nDCG@10", "stale served"],
        [[w["question"], ", ".join(w["expected"]), ", ".join(w["returned"]), w["rank_of_first_expected"] or "not in top 10",
          w["ndcg@10"], "yes" if w.get("stale_served") else ""] for w in worst],
    )


@dg.asset(
    group_name="quality",
    deps=[company_chunk_index],
    kinds={"python"},
    automation_condition=QUALITY_AUTOMATION,
    check_specs=[
        dg.AssetCheckSpec("retrieval_above_floor", asset="retrieval_quality", blocking=True,
                          description="nDCG@10, Recall@k and MRR of every golden set are at or above their floors."),
        dg.AssetCheckSpec("retrieval_not_below_last_good", asset="retrieval_quality", blocking=True,
                          description="nDCG@10 is no more than the tolerance below the last good run on this index."),
        dg.AssetCheckSpec("current_answer_wins", asset="retrieval_quality",
                          description="For questions whose answer changed, the current answer is served, not the superseded one."),
    ],
)
def retrieval_quality(store: StoreResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    """nDCG@10, Recall@k and MRR of the serving index on every configured golden set; the worst queries."""
    cs = store.open()
    report = evaluate_retrieval_quality(cs, embedder.for_store(cs))
    config = cs.settings.quality
    outcomes = retrieval_checks(report, config, baselines(cs, report))
    store_retrieval_quality(cs, report, outcomes, trigger=store.trigger)
    metadata: dict[str, Any] = {"index_fingerprint": report.fingerprint, "model": report.model, "table_version": report.table_version or 0,
                                "golden_sets": len(report.sets)}
    for s in report.sets:
        for key, value in s.metrics.items():
            metadata[f"{s.name}/{key}"] = _num(value)
        if s.error:
            metadata[f"{s.name}/error"] = s.error
        if s.format == "golden":
            metadata[f"{s.name}/worst_queries"] = _worst_table(s.worst)
    changed = [o for o in outcomes if "answer_changed" in o.name]
    tolerance = [o for o in outcomes if "last good" in o.name]
    floors = [o for o in outcomes if o not in changed and o not in tolerance]  # floors, and sets that could not be evaluated
    return dg.MaterializeResult(
        metadata=metadata,
        check_results=[
            _result("retrieval_above_floor", floors, dg.AssetCheckSeverity.ERROR, "no golden set evaluated"),
            _result("retrieval_not_below_last_good", tolerance, dg.AssetCheckSeverity.ERROR, "no earlier good run on this index yet"),
            _result("current_answer_wins", changed, dg.AssetCheckSeverity.WARN, "no answer-changed questions in the golden sets"),
        ],
    )


@dg.asset(
    group_name="quality",
    deps=[company_chunk_index, user_state_index],
    kinds={"lancedb"},
    automation_condition=QUALITY_AUTOMATION,
    check_specs=[dg.AssetCheckSpec(
        "candidate_at_least_as_good", asset="index_candidate", blocking=True,
        description="The index built with the configured model/chunker is complete, above every floor and not worse than live.",
    )],
)
def index_candidate(store: StoreResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    """When the configured embedding model or chunker differs from the serving one: the new index, built beside it and evaluated."""
    cs = store.open()
    wanted = pending_change(cs)
    serving = cs.deployment
    meta: dict[str, Any] = {"serving_fingerprint": serving.fingerprint, "serving_model": serving.model}
    if wanted is None:
        return dg.MaterializeResult(
            metadata={**meta, "candidate": "none: the configured model and chunker are serving"},
            check_results=[dg.AssetCheckResult(check_name="candidate_at_least_as_good", passed=True,
                                               description="no change pending", metadata={"pending": False})],
        )
    candidate_embedder = embedder.for_config(cs.configured.embedding, cs.settings.home)
    build = build_candidate(cs, candidate_embedder)
    reused = gate_is_current(cs, build.store)
    gate = reused or evaluate_gate(cs, embedder.for_store(cs), candidate_embedder, build.store, trigger=store.trigger)
    if reused is not None:  # neither index changed since the last verdict: the same verdict, no second evaluation
        gate.checks = [CheckOutcome("candidate verdict (unchanged since last evaluation)", gate.passed, gate.reason)]
    meta.update({
        "candidate_fingerprint": build.fingerprint, "candidate_model": cs.configured.embedding.model,
        "candidate_chunking": cs.configured.chunking.fingerprint(), "documents": build.documents,
        "documents_rebuilt": build.documents_rebuilt, "chunks_embedded": build.chunks_embedded, "build_s": round(build.seconds, 3),
        "gate": "passed" if gate.passed else "rejected", "reason": gate.reason, "evaluated_now": reused is None,
        "comparison": md_table(["set", "metric", "live", "candidate"],
                               [[c["set"], c["metric"], round(c["live"], 4), round(c["candidate"], 4)] for c in gate.comparison()], limit=60),
    })
    for name, metrics in gate.candidate_metrics.items():
        for key in ("ndcg@10", "mrr@10", "answer_changed_current_wins"):
            if key in metrics:
                meta[f"{name}/candidate_{key}"] = _num(metrics[key])
                meta[f"{name}/live_{key}"] = _num(gate.live_metrics.get(name, {}).get(key))
    return dg.MaterializeResult(metadata=meta, check_results=[_result("candidate_at_least_as_good", gate.checks, dg.AssetCheckSeverity.ERROR, "nothing to compare")])


@dg.asset(group_name="quality", deps=[index_candidate], kinds={"python"}, automation_condition=QUALITY_AUTOMATION)
def index_promotion(store: StoreResource) -> dg.MaterializeResult:
    """Switch retrieval to the candidate index — only when its latest gate evaluation passed on the table it would serve."""
    cs = store.open()
    if pending_change(cs) is None:
        return dg.MaterializeResult(metadata={"decision": "nothing pending", "serving_fingerprint": cs.deployment.fingerprint})
    gate = last_gate(cs)
    if gate is None or not gate.passed:
        # Blocking checks stop this asset in the gate's own run; a run started any other way stops here.
        return dg.MaterializeResult(metadata={"decision": "not promoted", "reason": gate.reason if gate else "no gate evaluation yet",
                                              "serving_fingerprint": cs.deployment.fingerprint})
    decision = promote(cs, gate, trigger=store.trigger)
    return dg.MaterializeResult(metadata={"decision": decision.decision, "reason": decision.reason,
                                          "serving_fingerprint": decision.candidate_fingerprint, "previous_fingerprint": decision.live_fingerprint})


@dg.asset(
    group_name="quality",
    deps=[company_chunk_index],
    kinds={"python"},
    automation_condition=QUALITY_AUTOMATION,
    check_specs=[dg.AssetCheckSpec("routing_ece_under_ceiling", asset="routing_quality",
                                   description="The confidence the API serves is calibrated: ECE at or under its ceiling on every "
                                               "golden set (through respond()) and on outcomes.")],
)
def routing_quality(store: StoreResource, embedder: EmbedderResource) -> dg.MaterializeResult:
    """Escalation precision/recall, coverage at the target precision and ECE of the answer/escalate policy on the golden sets:
    the served one (served_*) beside a cross-fitted calibrator; and the served confidence's ECE on outcomes."""
    cs = store.open()
    sets = evaluate_routing_quality(cs, embedder.for_store(cs))
    card = resolution_scorecard(cs)  # the served confidence against outcomes, when there are any
    gap = (card["confidence_outcome_gap"], card["confidence_outcome_n"], cs.settings.outcomes.scorecard_min_outcomes)
    outcomes = routing_checks(sets, cs.settings.quality, outcome_gap=gap)
    metadata: dict[str, Any] = {"target_precision": cs.settings.quality.routing_target_precision, "golden_sets": len(sets),
                                "outcomes/served_ece": _num(gap[0]), "outcomes/answers": gap[1]}
    for s in sets:
        mine = [o for o in outcomes if o.name.startswith(f"{s.name}:")]
        record_evaluation(cs, kind="routing", set_name=s.name, metrics=s.metrics, passed=bool(mine) and all(o.passed for o in mine),
                          details={"error": s.error, **(s.worst[0] if s.worst else {})}, trigger=store.trigger)
        for key, value in s.metrics.items():
            metadata[f"{s.name}/{key}"] = _num(value)
        if s.worst:
            reasons = s.worst[0]["escalations_by_reason"]
            metadata[f"{s.name}/escalations_by_reason"] = md_table(["reason", "questions"], [[r, n] for r, n in sorted(reasons.items(), key=lambda x: -x[1])])
        if s.error:
            metadata[f"{s.name}/error"] = s.error
    return dg.MaterializeResult(metadata=metadata, check_results=[
        _result("routing_ece_under_ceiling", outcomes, dg.AssetCheckSeverity.ERROR, "no golden set evaluated")])


@dg.asset(
    group_name="quality",
    deps=[staff_answer_review],
    kinds={"python"},
    automation_condition=QUALITY_AUTOMATION,
    check_specs=[
        dg.AssetCheckSpec("time_to_knowledge_within_ceiling", asset="learning_report",
                          description="Staff replies become retrievable fast enough (p95 under its ceiling)."),
        dg.AssetCheckSpec("answers_become_retrievable", asset="learning_report",
                          description="No stored staff answer waits longer than the ceiling to become retrievable."),
    ],
)
def learning_report(store: StoreResource) -> dg.MaterializeResult:
    """Time to knowledge, re-asked questions answered without a person, stale staff answers, escalation rate."""
    cs = store.open()
    m = learning_metrics(cs)
    outcomes = learning_checks(cs, m, cs.settings.quality)
    numbers = {k: v for k, v in m.items() if isinstance(v, (int, float)) and not isinstance(v, bool) or v is None and k.endswith(("_s", "_rate"))}
    record_evaluation(cs, kind="learning", set_name="learning_loop", metrics={k: v for k, v in numbers.items() if v is not None},
                      passed=all(o.passed for o in outcomes), details={"questions_by_status": m["questions_by_status"]}, trigger=store.trigger)
    metadata: dict[str, Any] = {k: _num(v) for k, v in numbers.items()}
    metadata["open_questions"] = m["questions_by_status"].get("open", 0)
    metadata["open_questions_by_age"] = md_table(list(m["open_questions_by_age"]), [list(m["open_questions_by_age"].values())])
    return dg.MaterializeResult(metadata=metadata, check_results=[
        _result("time_to_knowledge_within_ceiling", [outcomes[0]], dg.AssetCheckSeverity.WARN, ""),
        _result("answers_become_retrievable", [outcomes[1]], dg.AssetCheckSeverity.WARN, ""),
    ])
