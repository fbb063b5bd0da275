"""Jobs: the whole ingest, and each state lineage alone (user churn never touches documents)."""

from __future__ import annotations

import dagster as dg

from assets.ingestion import company_chunk_index, company_documents, user_snapshots, user_state_index
from assets.learning import staff_answer_review

__all__ = ["company_refresh_job", "ingest_job", "user_refresh_job"]

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(company_documents, company_chunk_index, staff_answer_review, user_snapshots, user_state_index),
    description="Version and index company and user state from every configured source.",
)
# The sensors' refresh runs execute their steps in the run's own process: a step process
# per asset would each import the code location and load the model again (seconds apiece)
# for a run that embeds a few changed chunks; freshness lag is what these runs are for.
company_refresh_job = dg.define_asset_job(
    "company_refresh_job", selection=dg.AssetSelection.assets(company_documents, company_chunk_index, staff_answer_review),
    executor_def=dg.in_process_executor,
)
user_refresh_job = dg.define_asset_job(
    "user_refresh_job", selection=dg.AssetSelection.assets(user_snapshots, user_state_index), executor_def=dg.in_process_executor,
)
