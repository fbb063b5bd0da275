"""When quality is measured and a changed index is gated: after every index change, on a schedule, and on a config change.

``FRESHCONTEXT_QUALITY_CRON`` (default: hourly at :20) sets the schedule. A changed
embedding model or chunker in the config file is noticed by ``index_change_sensor`` within
a tick: it requests one ``index_promotion_job`` run (``index_candidate`` builds and
evaluates the new index, ``index_promotion`` switches only if the gate passed). The
schedule evaluates a rejected candidate again later, when the documents may have changed.
"""

from __future__ import annotations

import os

import dagster as dg

from assets.freshness import freshness_report
from assets.quality import index_candidate, index_promotion, learning_report, retrieval_quality, routing_quality
from assets.resources import StoreResource
from context_store.measure.promotion import decision_since_promotion, measured_since_promotion, pending_change
from pipeline.sensors import SENSOR_INTERVAL_S, runs_in_progress

__all__ = [
    "QUALITY_ASSETS",
    "index_change_sensor",
    "index_change_tick",
    "index_promotion_job",
    "quality_automation_sensor",
    "quality_job",
    "quality_schedule",
    "serving_quality_job",
]

QUALITY_CRON = os.environ.get("FRESHCONTEXT_QUALITY_CRON", "20 * * * *")
QUALITY_ASSETS = [retrieval_quality, index_candidate, index_promotion, routing_quality, learning_report]
TAG_CANDIDATE = "freshcontext/candidate_fingerprint"

quality_job = dg.define_asset_job(
    "quality_job",
    selection=dg.AssetSelection.assets(*QUALITY_ASSETS),
    description="Evaluate retrieval, routing and learning; build, gate and promote a changed index.",
)
index_promotion_job = dg.define_asset_job(
    "index_promotion_job",
    selection=dg.AssetSelection.assets(index_candidate, index_promotion),
    description="Build the index for the configured model/chunker beside the live one, gate it, promote it if it passed.",
)
serving_quality_job = dg.define_asset_job(
    "serving_quality_job",
    selection=dg.AssetSelection.assets(retrieval_quality, routing_quality),
    description="Measure the serving index (after a promotion replaced it).",
)
quality_schedule = dg.ScheduleDefinition(
    name="quality_schedule", job=quality_job, cron_schedule=QUALITY_CRON, default_status=dg.DefaultScheduleStatus.RUNNING
)
quality_automation_sensor = dg.AutomationConditionSensorDefinition(
    "quality_automation_sensor",
    # the freshness report too: issue #6 wants every measurement after every index change
    target=dg.AssetSelection.assets(*QUALITY_ASSETS, freshness_report),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Runs the quality assets and the freshness report after every index change (AutomationCondition.eager).",
)


def _busy(context: dg.SensorEvaluationContext) -> str:
    """The quality jobs running now: a candidate build or evaluation in flight would race a second one."""
    return " and ".join(job for job in (index_promotion_job.name, quality_job.name, serving_quality_job.name) if runs_in_progress(context, job))


def index_change_tick(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.RunRequest | dg.SkipReason:
    """One run per configuration change, one measurement per promotion: run keys name the serving period."""
    cs = store.open()
    wanted = pending_change(cs)
    serving = cs.deployment
    if serving is None:
        return dg.SkipReason("this store has no serving deployment")
    since = serving.promoted_at.strftime("%Y%m%dT%H%M%S%f") if serving.promoted_at else "start"
    if wanted is None:
        if measured_since_promotion(cs):
            return dg.SkipReason(f"the configured model and chunker serve (index {serving.fingerprint})")
        if busy := _busy(context):
            return dg.SkipReason(f"the promoted index {serving.fingerprint} is measured after the running {busy}")
        return dg.RunRequest(job_name=serving_quality_job.name, run_key=f"measure-{serving.fingerprint}@{since}",
                             tags={"freshcontext/serving_fingerprint": serving.fingerprint})
    decided = decision_since_promotion(cs, wanted)
    if decided is not None:
        return dg.SkipReason(f"candidate {wanted} was {decided.decision} at {decided.decided_at:%Y-%m-%d %H:%M} UTC: {decided.reason}")
    if busy := _busy(context):
        return dg.SkipReason(f"candidate {wanted} waits for the running {busy}")
    return dg.RunRequest(
        job_name=index_promotion_job.name,
        run_key=f"index-{serving.fingerprint}@{since}-to-{wanted}",
        tags={TAG_CANDIDATE: wanted, "freshcontext/serving_fingerprint": serving.fingerprint,
              "freshcontext/candidate_model": cs.configured.embedding.model},
    )


@dg.sensor(
    jobs=[index_promotion_job, serving_quality_job],
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="The configured embedding model or chunker differs from the serving index → build, gate and promote it; "
    "a promoted index → measure it.",
)
def index_change_sensor(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.RunRequest | dg.SkipReason:
    return index_change_tick(context, store)
