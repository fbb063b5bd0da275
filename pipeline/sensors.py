"""Sensors: the change journal becomes runs of just the affected lineage; index changes become quality runs.

Each state kind has its own sensor and job, so user-state churn never re-processes company
documents. A tick reads journal rows after its cursor, coalesces them into one run carrying
the changed paths (a burst of 1,000 events is one run, not 1,000), and returns the new
cursor. While a run of that job is still going, the tick waits and lets rows pile up for
the next one. Rows the warm path already applied are skipped: the result would be
identical, so the run would be waste.

A changed embedding model or chunker in the config file is noticed by ``index_change_sensor``
within a tick: it requests one ``index_promotion_job`` run (``index_candidate`` builds and
evaluates the new index, ``index_promotion`` switches only if the gate passed), and after a
promotion one measurement of the serving index. The quality assets and the freshness report
also run after every index change (``quality_automation_sensor``).

Each tick's logic is a plain function (``journal_tick``, ``index_change_tick``) a test calls
with ``build_sensor_context``; ``build_sensors`` wraps them at the cadence's interval.
"""

from __future__ import annotations

import dagster as dg

from assets.freshness import freshness_report
from assets.resources import StoreResource
from context_store.measure import decision_since_promotion, measured_since_promotion, pending_change
from context_store.state import journal
from pipeline.cadence import Cadence
from pipeline.jobs import (
    QUALITY_ASSETS,
    company_refresh_job,
    index_promotion_job,
    quality_job,
    serving_quality_job,
    user_refresh_job,
)

__all__ = [
    "any_run_going",
    "build_sensors",
    "company_change_sensor",
    "index_change_sensor",
    "index_change_tick",
    "journal_settled_sensor",
    "journal_tick",
    "quality_automation_sensor",
    "runs_in_progress",
    "user_change_sensor",
]

TAG_KIND = "freshcontext/state_kind"
TAG_RANGE = "freshcontext/journal_ids"
TAG_CANDIDATE = "freshcontext/candidate_fingerprint"
_LINEAGES = {"company": ("company_refresh_job", "company_documents"), "user": ("user_refresh_job", "user_snapshots")}
_RUNNING = dg.DefaultSensorStatus.RUNNING


_IN_PROGRESS = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]


def any_run_going(instance: dg.DagsterInstance, job_name: str | None = None) -> bool:
    """A run (of ``job_name``, or of any job) is queued, starting or running."""
    return bool(instance.get_run_records(filters=dg.RunsFilter(job_name=job_name, statuses=_IN_PROGRESS), limit=1))


def runs_in_progress(context: dg.SensorEvaluationContext, job_name: str) -> int:
    try:
        instance = context.instance
    except dg.DagsterInvariantViolationError:  # a test context without an instance
        return 0
    return int(any_run_going(instance, job_name))


def journal_tick(context: dg.SensorEvaluationContext, store: StoreResource, state_kind: str) -> dg.SensorResult | dg.SkipReason:
    """One tick for one state kind (both sensors are this function)."""
    job_name, op_name = _LINEAGES[state_kind]
    cursor = int(context.cursor or 0)
    rows = journal.read_after(store.open(), cursor, state_kind=state_kind)
    if not rows:
        return dg.SkipReason(f"no {state_kind} journal rows after id {cursor}")
    if runs_in_progress(context, job_name):
        return dg.SkipReason(f"{len(rows)} {state_kind} changes wait for the running {job_name}")
    new_cursor = str(max(int(r.id or 0) for r in rows))
    pending = [r for r in rows if r.applied_at is None]
    if not pending:
        return dg.SensorResult(skip_reason=f"{len(rows)} {state_kind} changes already applied by the warm path", cursor=new_cursor)
    batch = journal.coalesce(pending)[state_kind]
    scope = "full scan" if batch.full_scan else f"{len(batch.paths)} paths"
    return dg.SensorResult(
        run_requests=[
            dg.RunRequest(
                run_key=f"{state_kind}-journal-{batch.first_id}-{batch.last_id}",
                job_name=job_name,
                run_config={"ops": {op_name: {"config": {"paths": batch.paths}}}},
                tags={TAG_KIND: state_kind, TAG_RANGE: f"{batch.first_id}-{batch.last_id}", "freshcontext/scope": scope},
            )
        ],
        cursor=new_cursor,
    )


def _journal_settled(context: dg.RunStatusSensorContext, store: StoreResource) -> dg.SkipReason | None:
    tags = context.dagster_run.tags
    kind, id_range = tags.get(TAG_KIND), tags.get(TAG_RANGE)
    if not kind or not id_range:
        return dg.SkipReason("not a journal-driven run")
    first, last = (int(x) for x in id_range.split("-"))
    marked = journal.mark_applied(store.open(), by="dagster", state_kind=kind, id_range=(first, last))
    context.log.info("run %s applied %d %s journal rows (%s)", context.dagster_run.run_id, marked, kind, id_range)
    return None


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


def _journal_sensor(state_kind: str, job: dg.UnresolvedAssetJobDefinition, interval: int, description: str) -> dg.SensorDefinition:
    def evaluate(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.SensorResult | dg.SkipReason:
        return journal_tick(context, store, state_kind)

    return dg.sensor(job=job, name=f"{state_kind}_change_sensor", minimum_interval_seconds=interval, default_status=_RUNNING,
                     description=description)(evaluate)


def build_sensors(cadence: Cadence) -> list[dg.SensorDefinition]:
    """The journal sensors, the journal-settled sensor, the index-change sensor and the quality automation."""
    interval = cadence.sensor_interval_s
    settled = dg.run_status_sensor(
        name="journal_settled_sensor", run_status=dg.DagsterRunStatus.SUCCESS, monitored_jobs=[company_refresh_job, user_refresh_job],
        default_status=_RUNNING, minimum_interval_seconds=interval,
        description="A sensor-requested refresh succeeded → its journal rows are applied (freshness backlog).",
    )(_journal_settled)

    def index_change(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.RunRequest | dg.SkipReason:
        return index_change_tick(context, store)

    index_sensor = dg.sensor(
        name="index_change_sensor", jobs=[index_promotion_job, serving_quality_job], minimum_interval_seconds=interval,
        default_status=_RUNNING,
        description="The configured embedding model or chunker differs from the serving index → build, gate and promote it; "
        "a promoted index → measure it.",
    )(index_change)
    automation = dg.AutomationConditionSensorDefinition(
        "quality_automation_sensor",
        target=dg.AssetSelection.assets(*QUALITY_ASSETS, freshness_report),
        default_status=_RUNNING,
        minimum_interval_seconds=30,
        description="Runs the quality assets and the freshness report after every index change (AutomationCondition.eager).",
    )
    return [
        _journal_sensor("company", company_refresh_job, interval, "Company files changed (change journal) → version and index only those files."),
        _journal_sensor("user", user_refresh_job, interval, "User snapshot files changed (change journal) → re-version only those users' files."),
        settled, index_sensor, automation,
    ]


company_change_sensor, user_change_sensor, journal_settled_sensor, index_change_sensor, quality_automation_sensor = build_sensors(Cadence())
