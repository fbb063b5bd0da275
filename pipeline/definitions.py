"""The one Dagster code location: ``dagster dev -w workspace.yaml`` loads ``defs`` from here."""

from __future__ import annotations

import dagster as dg

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
from pipeline.resources import build_resources

INGEST_ASSETS = [company_documents, company_chunk_index, user_snapshots, user_state_index]
INGEST_CHECKS = [company_index_matches_store, user_index_matches_store]
LEARNING_ASSETS, LEARNING_CHECKS = [staff_answer_review], [staff_answers_current]

defs = dg.Definitions(
    assets=INGEST_ASSETS + LEARNING_ASSETS,
    asset_checks=INGEST_CHECKS + LEARNING_CHECKS,
    jobs=[ingest_job, company_refresh_job, user_refresh_job],
    resources=build_resources(),
)
