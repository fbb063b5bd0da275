"""The one Dagster code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from __future__ import annotations

import dagster as dg

from assets.freshness import freshness_report, source_reconciliation
from assets.ingestion import (
    company_chunk_index,
    company_documents,
    company_index_matches_store,
    user_index_matches_store,
    user_snapshots,
    user_state_index,
)
from assets.learning import staff_answer_review, staff_answers_current
from pipeline.jobs import company_refresh_job, ingest_job, user_refresh_job
from pipeline.quality_jobs import (
    QUALITY_ASSETS,
    index_change_sensor,
    index_promotion_job,
    quality_automation_sensor,
    quality_job,
    quality_schedule,
    serving_quality_job,
)
from pipeline.resources import build_resources
from pipeline.schedules import (
    compaction_job,
    compaction_schedule,
    freshness_job,
    freshness_schedule,
    reconcile_job,
    reconcile_schedule,
)
from pipeline.sensors import company_change_sensor, journal_settled_sensor, user_change_sensor

INGEST_ASSETS = [company_documents, company_chunk_index, user_snapshots, user_state_index]
INGEST_CHECKS = [company_index_matches_store, user_index_matches_store]
FRESHNESS_ASSETS = [freshness_report, source_reconciliation]
LEARNING_ASSETS, LEARNING_CHECKS = [staff_answer_review], [staff_answers_current]

defs = dg.Definitions(
    assets=[*INGEST_ASSETS, *FRESHNESS_ASSETS, *LEARNING_ASSETS, *QUALITY_ASSETS],
    asset_checks=[*INGEST_CHECKS, *LEARNING_CHECKS],
    jobs=[ingest_job, company_refresh_job, user_refresh_job, reconcile_job, freshness_job, compaction_job, quality_job,
          index_promotion_job, serving_quality_job],
    sensors=[company_change_sensor, user_change_sensor, journal_settled_sensor, quality_automation_sensor, index_change_sensor],
    schedules=[reconcile_schedule, freshness_schedule, compaction_schedule, quality_schedule],
    resources=build_resources(),
    executor=dg.in_process_executor,  # see pipeline/jobs.py; ingest_job keeps a process per step
)
