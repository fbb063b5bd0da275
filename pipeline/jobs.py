"""Every job: the whole ingest, each state lineage alone, reconciliation, the report, compaction, quality and promotion.

The whole ingest runs the two lineages side by side, a process per step; every other job
(and every run the automation sensor launches) runs in the run's own process (the
Definitions' executor): a step process per asset imports the code location and loads the
model again, seconds of CPU apiece, for runs that are short and share two cores with the
warm path and the API.
"""

from __future__ import annotations

import dagster as dg

from assets.freshness import compact_lancedb, freshness_report, source_reconciliation
from assets.ingestion import company_chunk_index, company_documents, user_snapshots, user_state_index
from assets.learning import staff_answer_review
from assets.outcomes import outcome_calibration, outcome_calibrator, resolution_scorecard_asset
from assets.quality import index_candidate, index_promotion, learning_report, retrieval_quality, routing_quality

__all__ = [
    "QUALITY_ASSETS",
    "company_refresh_job",
    "compaction_job",
    "freshness_job",
    "index_promotion_job",
    "ingest_job",
    "quality_job",
    "reconcile_job",
    "serving_quality_job",
    "user_refresh_job",
]

QUALITY_ASSETS = [retrieval_quality, index_candidate, index_promotion, routing_quality, learning_report, resolution_scorecard_asset,
                  outcome_calibration, outcome_calibrator]

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


quality_job = dg.define_asset_job(
    "quality_job",
    selection=dg.AssetSelection.assets(*QUALITY_ASSETS),
    description="Evaluate retrieval, routing, learning and resolution; build, gate and promote a changed index; "
    "learn the calibrator from outcomes and install it when it is at least as good.",
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
