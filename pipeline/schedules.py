"""Schedules: hourly reconciliation (the journal can miss events), report refresh, LanceDB compaction.

Cron strings come from the environment so a deployment tunes them without code:
``FRESHCONTEXT_RECONCILE_CRON`` (default hourly), ``FRESHCONTEXT_REPORT_CRON`` (every 10
minutes) and ``FRESHCONTEXT_COMPACT_CRON`` (daily, 03:30).
"""

from __future__ import annotations

import os

import dagster as dg

from assets.freshness import compact_lancedb, freshness_report, source_reconciliation
from assets.ingestion import company_chunk_index, company_documents, user_snapshots, user_state_index

__all__ = [
    "compaction_job",
    "compaction_schedule",
    "freshness_job",
    "freshness_schedule",
    "reconcile_job",
    "reconcile_schedule",
]

RECONCILE_CRON = os.environ.get("FRESHCONTEXT_RECONCILE_CRON", "0 * * * *")
REPORT_CRON = os.environ.get("FRESHCONTEXT_REPORT_CRON", "*/10 * * * *")
COMPACT_CRON = os.environ.get("FRESHCONTEXT_COMPACT_CRON", "30 3 * * *")

reconcile_job = dg.define_asset_job(
    "reconcile_job",
    selection=dg.AssetSelection.assets(
        company_documents, company_chunk_index, user_snapshots, user_state_index, source_reconciliation, freshness_report
    ),
    tags={"freshcontext/trigger": "reconcile"},
    description="Re-hash every source (full scan), repair what the journal missed, count the differences.",
)
freshness_job = dg.define_asset_job("freshness_job", selection=dg.AssetSelection.assets(freshness_report))


@dg.job(description="Compact LanceDB tables and delete old table versions.")
def compaction_job() -> None:
    compact_lancedb()


reconcile_schedule = dg.ScheduleDefinition(
    name="reconcile_schedule", job=reconcile_job, cron_schedule=RECONCILE_CRON, default_status=dg.DefaultScheduleStatus.RUNNING
)
freshness_schedule = dg.ScheduleDefinition(
    name="freshness_schedule", job=freshness_job, cron_schedule=REPORT_CRON, default_status=dg.DefaultScheduleStatus.RUNNING
)
compaction_schedule = dg.ScheduleDefinition(
    name="compaction_schedule", job=compaction_job, cron_schedule=COMPACT_CRON, default_status=dg.DefaultScheduleStatus.RUNNING
)
