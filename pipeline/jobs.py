"""Jobs: the whole ingest, and each state lineage alone (user churn never touches documents)."""

from __future__ import annotations

import dagster as dg

from assets.ingestion import company_chunk_index, company_documents, user_snapshots, user_state_index
from assets.learning import staff_answer_review

__all__ = ["company_refresh_job", "ingest_job", "user_refresh_job"]

# The whole ingest runs the two lineages side by side, a process per step; every other job
# (and every run the automation sensor launches) runs in the run's own process
# (``pipeline.definitions``): a step process per asset imports the code location and loads
# the model again, seconds of CPU apiece, for runs that are short and share two cores with
# the warm path and the API.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(company_documents, company_chunk_index, staff_answer_review, user_snapshots, user_state_index),
    description="Version and index company and user state from every configured source.",
    executor_def=dg.multi_or_in_process_executor,  # multiprocess unless run config says in_process
)
company_refresh_job = dg.define_asset_job(
    "company_refresh_job", selection=dg.AssetSelection.assets(company_documents, company_chunk_index, staff_answer_review),
    executor_def=dg.in_process_executor,
)
user_refresh_job = dg.define_asset_job(
    "user_refresh_job", selection=dg.AssetSelection.assets(user_snapshots, user_state_index), executor_def=dg.in_process_executor,
)
