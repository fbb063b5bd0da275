"""Sensors on a real journal: cursor, lineage, batching, and the run they request."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from sqlmodel import select

from assets.ingestion import company_chunk_index, company_documents, user_snapshots, user_state_index
from assets.learning import staff_answer_review  # company_refresh_job also reviews staff answers
from assets.resources import StoreResource
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import apply_changes
from context_store.state import journal
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, IngestRun
from pipeline.definitions import build_defs
from pipeline.jobs import company_refresh_job
from pipeline.sensors import company_change_sensor, journal_settled_sensor, user_change_sensor

defs = build_defs()  # the default cadence


class _Fixed:
    def __init__(self, embedder: HashingEmbedder) -> None:
        self.embedder = embedder

    def for_store(self, store: ContextStore) -> HashingEmbedder:
        return self.embedder


def _resource(store: ContextStore) -> StoreResource:
    store.settings.save()  # the resource reads the home's config file, as a Dagster run does
    return StoreResource(home=str(store.settings.home))


def _tick(sensor: dg.SensorDefinition, store: ContextStore, cursor: str | None, instance: dg.DagsterInstance | None = None):  # type: ignore[no-untyped-def]
    context = dg.build_sensor_context(cursor=cursor, resources={"store": _resource(store)}, instance=instance)
    return sensor(context)


def _journal(store: ContextStore, *paths: Path) -> None:
    assert journal.append(store, [journal.entry_for_path(store.settings, p) for p in paths]) == len(paths)


def test_sensors_are_on_by_default_and_schedules_exist() -> None:
    for name in ("company_change_sensor", "user_change_sensor", "journal_settled_sensor"):
        assert defs.resolve_sensor_def(name).default_status == dg.DefaultSensorStatus.RUNNING
    schedules = {s.name: s for s in defs.schedules}
    assert schedules["reconcile_schedule"].cron_schedule == "0 * * * *"
    assert {"freshness_schedule", "compaction_schedule"} <= set(schedules)
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in schedules.values())


def test_company_tick_requests_one_company_run_with_the_changed_paths(store: ContextStore, sources: dict[str, Path]) -> None:
    company = sources["company"]
    for i in range(200):  # a burst on two files
        (company / "refunds.md").write_text(f"# Refunds\n\nrevision {i}\n")
        (company / "billing" / "invoices.md").write_text(f"# Invoices\n\nrevision {i}\n")
        journal.append(store, [journal.entry_for_path(store.settings, company / "refunds.md"),
                               journal.entry_for_path(store.settings, company / "billing" / "invoices.md")])
    rows = journal.read_after(store, 0)
    assert len(rows) > 2

    result = _tick(company_change_sensor, store, None)
    assert isinstance(result, dg.SensorResult) and len(result.run_requests) == 1
    request = result.run_requests[0]
    assert request.job_name == "company_refresh_job"
    assert sorted(request.run_config["ops"]["company_documents"]["config"]["paths"]) == sorted(
        str(p.resolve()) for p in (company / "refunds.md", company / "billing" / "invoices.md")
    )
    assert result.cursor == str(rows[-1].id)
    again = _tick(company_change_sensor, store, result.cursor)
    assert isinstance(again, dg.SkipReason)
    # the user sensor has nothing to do with company churn
    assert isinstance(_tick(user_change_sensor, store, None), dg.SkipReason)


def test_user_churn_requests_only_the_user_lineage(store: ContextStore, sources: dict[str, Path]) -> None:
    _journal(store, sources["users"] / "u-1.json", sources["users"] / "u-2.json")
    result = _tick(user_change_sensor, store, None)
    assert isinstance(result, dg.SensorResult)
    (request,) = result.run_requests
    assert request.job_name == "user_refresh_job" and set(request.run_config["ops"]) == {"user_snapshots"}
    assert isinstance(_tick(company_change_sensor, store, None), dg.SkipReason)
    job = defs.resolve_job_def("user_refresh_job")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"user_snapshots", "user_state_index"}


def test_rows_already_applied_by_the_warm_path_only_move_the_cursor(store: ContextStore, sources: dict[str, Path]) -> None:
    _journal(store, sources["company"] / "refunds.md")
    apply_changes(store, HashingEmbedder())
    result = _tick(company_change_sensor, store, "0")
    assert isinstance(result, dg.SensorResult) and not result.run_requests
    assert result.cursor == str(journal.latest_id(store))


def test_rescan_row_requests_a_full_scan(store: ContextStore, sources: dict[str, Path]) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="watcher started")])
    result = _tick(company_change_sensor, store, None)
    assert result.run_requests[0].run_config["ops"]["company_documents"]["config"]["paths"] == []


def test_requested_run_applies_only_those_paths_and_settles_the_journal(store: ContextStore, sources: dict[str, Path]) -> None:
    embedder = HashingEmbedder()
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start"),
                           journal.rescan_entry("user", "users", sources["users"], reason="start")])
    apply_changes(store, embedder)
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("30 days", "14 days"))
    _journal(store, refunds)

    instance = dg.DagsterInstance.ephemeral()
    result = _tick(company_change_sensor, store, str(journal.latest_id(store) - 1), instance)
    (request,) = result.run_requests
    job = dg.Definitions(
        assets=[company_documents, company_chunk_index, staff_answer_review, user_snapshots, user_state_index],
        jobs=[company_refresh_job],
        resources={"store": _resource(store), "embedder": dg.ResourceDefinition.hardcoded_resource(_Fixed(embedder))},
    ).resolve_job_def("company_refresh_job")
    run = job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags)
    assert run.success
    meta = run.asset_materializations_for_node("company_documents")[0].metadata
    assert meta["documents_seen"].value == 1 and meta["changed"].value == 1
    assert not run.asset_materializations_for_node("user_snapshots")
    with store.session() as s:
        doc = s.get(Document, "company/refunds.md")
        assert doc.current_version_id == doc.indexed_version_id
        assert not s.exec(select(IngestRun).where(IngestRun.state_kind == "user", IngestRun.trigger == "dagster")).all()

    assert journal.read_after(store, 0, unapplied_only=True)  # the run ran, the journal does not know yet
    context = dg.build_run_status_sensor_context(
        sensor_name="journal_settled_sensor", dagster_event=run.get_run_success_event(), dagster_instance=instance,
        dagster_run=run.dagster_run, resources={"store": _resource(store)},
    )
    journal_settled_sensor(context)
    rows = journal.read_after(store, 0)
    assert not [r for r in rows if r.applied_at is None] and rows[-1].applied_by == "dagster"
