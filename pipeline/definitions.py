"""The one Dagster code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here.

``defs`` is lazy (``@dg.definitions``): the cadence is read from the environment when the
code location loads, not when this module is imported. Tests build definitions with
``build_defs()`` (default cadence) or ``build_defs(Cadence(...))``.
"""

from __future__ import annotations

import os

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
from pipeline.cadence import Cadence
from pipeline.jobs import (
    QUALITY_ASSETS,
    compaction_job,
    company_refresh_job,
    freshness_job,
    index_promotion_job,
    ingest_job,
    quality_job,
    reconcile_job,
    serving_quality_job,
    user_refresh_job,
)
from pipeline.resources import build_resources
from pipeline.schedules import build_schedules
from pipeline.sensors import build_sensors

__all__ = ["FRESHNESS_ASSETS", "INGEST_ASSETS", "INGEST_CHECKS", "LEARNING_ASSETS", "LEARNING_CHECKS", "build_defs", "defs"]

INGEST_ASSETS = [company_documents, company_chunk_index, user_snapshots, user_state_index]
INGEST_CHECKS = [company_index_matches_store, user_index_matches_store]
FRESHNESS_ASSETS = [freshness_report, source_reconciliation]
LEARNING_ASSETS, LEARNING_CHECKS = [staff_answer_review], [staff_answers_current]


def build_defs(cadence: Cadence = Cadence()) -> dg.Definitions:
    """Every asset, check, job, sensor and schedule, at ``cadence``."""
    return dg.Definitions(
        assets=[*INGEST_ASSETS, *FRESHNESS_ASSETS, *LEARNING_ASSETS, *QUALITY_ASSETS],
        asset_checks=[*INGEST_CHECKS, *LEARNING_CHECKS],
        jobs=[ingest_job, company_refresh_job, user_refresh_job, reconcile_job, freshness_job, compaction_job, quality_job,
              index_promotion_job, serving_quality_job],
        sensors=build_sensors(cadence),
        schedules=build_schedules(cadence),
        resources=build_resources(),
        executor=dg.in_process_executor,  # see pipeline/jobs.py; ingest_job keeps a process per step
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_defs(Cadence.from_env(os.environ))
