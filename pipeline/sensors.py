"""Sensors: the change journal becomes runs of just the affected lineage.

Each state kind has its own sensor and job, so user-state churn never re-processes company
documents. A tick reads journal rows after its cursor, coalesces them into one run carrying
the changed paths (a burst of 1,000 events is one run, not 1,000), and returns the new
cursor. While a run of that job is still going, the tick waits and lets rows pile up for
the next one. Rows the warm path already applied are skipped: the result would be
identical, so the run would be waste.
"""

from __future__ import annotations

import os

import dagster as dg

from assets.resources import StoreResource
from context_store.state import journal
from pipeline.jobs import company_refresh_job, user_refresh_job

__all__ = ["SENSOR_INTERVAL_S", "any_run_going", "company_change_sensor", "journal_settled_sensor", "journal_tick", "runs_in_progress", "user_change_sensor"]

SENSOR_INTERVAL_S = int(os.environ.get("FRESHCONTEXT_SENSOR_INTERVAL_S", "5"))
TAG_KIND = "freshcontext/state_kind"
TAG_RANGE = "freshcontext/journal_ids"
_LINEAGES = {"company": ("company_refresh_job", "company_documents"), "user": ("user_refresh_job", "user_snapshots")}


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


@dg.sensor(
    job=company_refresh_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Company files changed (change journal) → version and index only those files.",
)
def company_change_sensor(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.SensorResult | dg.SkipReason:
    return journal_tick(context, store, "company")


@dg.sensor(
    job=user_refresh_job,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="User snapshot files changed (change journal) → re-version only those users' files.",
)
def user_change_sensor(context: dg.SensorEvaluationContext, store: StoreResource) -> dg.SensorResult | dg.SkipReason:
    return journal_tick(context, store, "user")


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    monitored_jobs=[company_refresh_job, user_refresh_job],
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    description="A sensor-requested refresh succeeded → its journal rows are applied (freshness backlog).",
)
def journal_settled_sensor(context: dg.RunStatusSensorContext, store: StoreResource) -> dg.SkipReason | None:
    tags = context.dagster_run.tags
    kind, id_range = tags.get(TAG_KIND), tags.get(TAG_RANGE)
    if not kind or not id_range:
        return dg.SkipReason("not a journal-driven run")
    first, last = (int(x) for x in id_range.split("-"))
    marked = journal.mark_applied(store.open(), by="dagster", state_kind=kind, id_range=(first, last))
    context.log.info("run %s applied %d %s journal rows (%s)", context.dagster_run.run_id, marked, kind, id_range)
    return None
