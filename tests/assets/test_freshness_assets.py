"""Reconciliation, the freshness report's checks and LanceDB compaction, run by Dagster."""

from __future__ import annotations

import time
from pathlib import Path

import dagster as dg

from assets.resources import StoreResource
from context_store.index.embed.fake import HashingEmbedder
from context_store.retrieve.retriever import retrieve
from context_store.state import journal
from context_store.store.context_store import ContextStore
from context_store.store.models import Document
from pipeline.definitions import FRESHNESS_ASSETS, INGEST_ASSETS, INGEST_CHECKS
from pipeline.jobs import compaction_job, reconcile_job


class _Fixed:
    def __init__(self, embedder: HashingEmbedder) -> None:
        self.embedder = embedder

    def for_store(self, store: ContextStore) -> HashingEmbedder:
        return self.embedder


def _defs(store: ContextStore, embedder: HashingEmbedder) -> dg.Definitions:
    store.settings.save()
    return dg.Definitions(
        assets=[*INGEST_ASSETS, *FRESHNESS_ASSETS],
        asset_checks=INGEST_CHECKS,
        jobs=[reconcile_job, compaction_job],
        resources={
            "store": StoreResource(home=str(store.settings.home)),
            "embedder": dg.ResourceDefinition.hardcoded_resource(_Fixed(embedder)),
        },
    )


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict[str, object]:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[-1].metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations() if e.asset_key.path[-1] == "freshness_report"}


def test_reconciliation_repairs_an_edit_the_journal_never_saw(store: ContextStore, sources: dict[str, Path]) -> None:
    embedder = HashingEmbedder()
    defs = _defs(store, embedder)
    instance = dg.DagsterInstance.ephemeral()
    job = defs.resolve_job_def("reconcile_job")
    first = job.execute_in_process(instance=instance)
    assert first.success and _meta(first, "source_reconciliation")["differences"] == 4  # 2 documents + 2 users, all new

    # the watcher was down: an edit, a deletion, and one change it did journal but nobody applied
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("within 30 days", "within 14 days"))
    (sources["company"] / "billing" / "invoices.md").unlink()
    u1 = sources["users"] / "u-1.json"
    u1.write_text(u1.read_text().replace('"shipped"', '"delivered"'))
    journal.append(store, [journal.entry_for_path(store.settings, u1)])

    second = job.execute_in_process(instance=instance)
    assert second.success
    meta = _meta(second, "source_reconciliation")
    assert (meta["company_changed"], meta["company_deleted"], meta["user_changed"]) == (1, 1, 1)
    assert meta["differences"] == 3 and meta["missed_by_journal"] == 1  # the deletion has no version to compare
    assert meta["journal_rows_settled"] == 1 and not journal.read_after(store, 0, unapplied_only=True)
    assert "14 days" in retrieve(store, embedder, "refund within 14 days", k=1).results[0].text

    checks = _checks(second)
    assert checks["sources_reachable"] and checks["no_unindexed_change_older_than_sla"]
    report = _meta(second, "freshness_report")
    assert report["unindexed_changes"] == 0 and report["users_current"] == 2
    assert report["company_versions_in_window"] == 1  # the edit; first versions are backfill

    third = job.execute_in_process(instance=instance)
    assert _meta(third, "source_reconciliation")["differences"] == 0


def test_an_unmounted_root_fails_the_check_and_keeps_the_documents(store: ContextStore, sources: dict[str, Path]) -> None:
    defs = _defs(store, HashingEmbedder())
    job = defs.resolve_job_def("reconcile_job")
    assert job.execute_in_process().success
    sources["company"].rename(sources["company"].with_name("company-unmounted"))
    result = job.execute_in_process(raise_on_error=False)
    assert _meta(result, "company_documents")["source_errors"] == 1
    assert _meta(result, "source_reconciliation")["company_deleted"] == 0
    assert _checks(result)["sources_reachable"] is False
    with store.session() as s:
        assert s.get(Document, "company/refunds.md").current_version_id is not None


def test_compaction_job_cleans_old_table_versions(store: ContextStore, sources: dict[str, Path]) -> None:
    defs = _defs(store, HashingEmbedder())
    defs.resolve_job_def("reconcile_job").execute_in_process()
    refunds = sources["company"] / "refunds.md"
    for i in range(3):
        refunds.write_text(refunds.read_text() + f"\nEdit {i}.\n")
        defs.resolve_job_def("reconcile_job").execute_in_process()
    time.sleep(0.5)
    result = defs.resolve_job_def("compaction_job").execute_in_process(
        run_config={"ops": {"compact_lancedb": {"config": {"cleanup_older_than_hours": 0.0001}}}}  # 0.36 s
    )
    assert result.success
    (output,) = [e for e in result.all_node_events if e.event_type_value == "STEP_OUTPUT"]
    meta = {k: v.value for k, v in output.event_specific_data.metadata.items()}
    assert meta["company_chunks_versions_after"] < meta["company_chunks_versions_before"]
    assert meta["company_chunks_rows_after"] == meta["company_chunks_rows_before"]


def test_the_report_follows_every_index_change_not_only_its_schedule() -> None:
    from pipeline.definitions import build_defs

    defs = build_defs()
    from pipeline.sensors import quality_automation_sensor

    assert quality_automation_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    instance = dg.DagsterInstance.ephemeral()
    report = dg.AssetKey("freshness_report")

    def tick(cursor: object = None) -> tuple[int, object]:
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)  # type: ignore[arg-type]
        return result.get_num_requested(report), result.cursor

    def materialized(*keys: str) -> None:
        for key in keys:  # as Dagster runs or the warm path's reporter record them
            instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key))

    requested, cursor = tick()
    assert requested == 0
    # the first ingest; the home was never reconciled, which must not hold the report back
    materialized("company_documents", "company_chunk_index", "user_snapshots", "user_state_index")
    requested, cursor = tick(cursor)
    assert requested == 1
    materialized("freshness_report")
    requested, cursor = tick(cursor)
    assert requested == 0
    materialized("company_chunk_index")  # a change indexed
    requested, cursor = tick(cursor)
    assert requested == 1
    materialized("freshness_report", "source_reconciliation")  # reconcile_job runs the report itself
    requested, cursor = tick(cursor)
    assert requested == 0
