"""Schedules: hourly reconciliation (the journal can miss events), report refresh, LanceDB compaction, quality.

The cron strings come from a ``Cadence`` (``pipeline.cadence``); the module-level schedules
use its defaults, and ``build_schedules`` makes them for another one.
"""

from __future__ import annotations

import dagster as dg

from pipeline.cadence import Cadence
from pipeline.jobs import compaction_job, freshness_job, quality_job, reconcile_job

__all__ = ["build_schedules", "compaction_schedule", "freshness_schedule", "quality_schedule", "reconcile_schedule"]


def build_schedules(cadence: Cadence) -> list[dg.ScheduleDefinition]:
    """Reconciliation, freshness report, compaction and quality, each running by default."""
    running = dg.DefaultScheduleStatus.RUNNING
    return [
        dg.ScheduleDefinition(name="reconcile_schedule", job=reconcile_job, cron_schedule=cadence.reconcile_cron, default_status=running),
        dg.ScheduleDefinition(name="freshness_schedule", job=freshness_job, cron_schedule=cadence.report_cron, default_status=running),
        dg.ScheduleDefinition(name="compaction_schedule", job=compaction_job, cron_schedule=cadence.compact_cron, default_status=running),
        dg.ScheduleDefinition(name="quality_schedule", job=quality_job, cron_schedule=cadence.quality_cron, default_status=running),
    ]


reconcile_schedule, freshness_schedule, compaction_schedule, quality_schedule = build_schedules(Cadence())
