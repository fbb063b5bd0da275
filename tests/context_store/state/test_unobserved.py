"""Unobserved changes: every source file stat-ed and compared with what the syncs last saw (state.observed)."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import dagster as dg
from click.testing import CliRunner

from assets.freshness import freshness_report as freshness_report_asset
from assets.resources import StoreResource
from context_store._common import utcnow
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import apply_changes, ingest
from context_store.measure.freshness import evaluate_checks, freshness_report
from context_store.state import journal, unobserved_changes
from context_store.store.context_store import ContextStore
from context_store.store.models import DocumentVersion, SourceObservation
from pipeline.cli import main


def _by_source(store: ContextStore) -> dict[str, dict[str, object]]:
    return {s["source"]: s for s in unobserved_changes(store).as_dict()["sources"]}


def test_every_kind_of_change_no_one_observed_is_found_per_source(store: ContextStore, sources: dict[str, Path]) -> None:
    ingest(store, HashingEmbedder())
    report = unobserved_changes(store)
    assert report.count == 0 and report.files == 4 and report.oldest_age_s is None

    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("30 days", "14 days"))
    (sources["company"] / "new.md").write_text("# New\n\nNobody saw this arrive.\n")
    (sources["company"] / "billing" / "invoices.md").unlink()
    u1 = sources["users"] / "u-1.json"
    u1.write_text(u1.read_text().replace('"shipped"', '"delivered"'))
    # a change the watcher journaled is no unobserved change: it waits in the backlog instead
    seen = sources["company"] / "seen.md"
    seen.write_text("# Seen\n\nJournaled by the watcher, not applied yet.\n")
    journal.append(store, [journal.entry_for_path(store.settings, seen)])

    found = _by_source(store)
    company, users = found["company"], found["users"]
    assert (company["changed"], company["added"], company["removed"], company["count"]) == (1, 1, 1, 3)
    assert (users["changed"], users["added"], users["removed"]) == (1, 0, 0)
    assert {i["change"]: Path(i["path"]).name for i in company["items"]} == {"changed": "refunds.md", "added": "new.md", "removed": "invoices.md"}
    assert 0 <= company["oldest_age_s"] < 60 and company["files"] == 3  # refunds, new, seen
    assert not any(Path(i["path"]).name == "seen.md" for i in company["items"])

    # the next sync observes all of it
    ingest(store, HashingEmbedder())
    assert unobserved_changes(store).count == 0


def test_a_touch_counts_until_a_sync_looks_and_writes_nothing_new(store: ContextStore, sources: dict[str, Path]) -> None:
    ingest(store, HashingEmbedder())
    refunds = sources["company"] / "refunds.md"
    later = utcnow().timestamp() + 5
    os.utime(refunds, (later, later))  # same text, new mtime: a stat cannot tell, so it is reported
    assert _by_source(store)["company"]["changed"] == 1
    with store.session() as s:
        versions = len(s.exec(DocumentVersion.__table__.select()).all())
    ingest(store, HashingEmbedder())  # a full re-hash: nothing changed, but the new stat is recorded
    assert unobserved_changes(store).count == 0
    with store.session() as s:
        assert len(s.exec(DocumentVersion.__table__.select()).all()) == versions
        row = s.get(SourceObservation, str(refunds))
        assert row is not None and row.mtime_ns == os.stat(refunds).st_mtime_ns and row.size == refunds.stat().st_size


def test_a_path_sync_records_and_forgets_only_what_it_looked_at(store: ContextStore, sources: dict[str, Path]) -> None:
    ingest(store, HashingEmbedder())
    invoices, refunds = sources["company"] / "billing" / "invoices.md", sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text() + "\nMore.\n")
    invoices.unlink()
    journal.append(store, [journal.entry_for_path(store.settings, invoices, deleted=True)])
    apply_changes(store, HashingEmbedder())  # the journal names invoices.md only
    with store.session() as s:
        assert s.get(SourceObservation, str(invoices)) is None
    assert [(i["change"], Path(i["path"]).name) for i in _by_source(store)["company"]["items"]] == [("changed", "refunds.md")]


def test_the_check_fails_when_an_unobserved_change_is_older_than_the_sla(store: ContextStore, sources: dict[str, Path]) -> None:
    ingest(store, HashingEmbedder())
    fine = {o.name: o for o in evaluate_checks(freshness_report(store), sla_seconds=300)}["no_unobserved_change_older_than_sla"]
    assert fine.passed and fine.value is None
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("30 days", "14 days"))
    soon = {o.name: o for o in evaluate_checks(freshness_report(store), sla_seconds=300)}["no_unobserved_change_older_than_sla"]
    assert soon.passed and soon.value is not None and soon.value < 300
    late = freshness_report(store, now=utcnow() + timedelta(minutes=10))
    outcome = {o.name: o for o in evaluate_checks(late, sla_seconds=300)}["no_unobserved_change_older_than_sla"]
    assert not outcome.passed and outcome.value >= 600 and outcome.threshold == 300
    assert "refunds.md (changed)" in outcome.detail and "1 changes" in outcome.detail
    assert late.as_dict()["unobserved_changes"]["count"] == 1


def test_status_freshness_and_the_asset_report_them(store: ContextStore, sources: dict[str, Path]) -> None:
    ingest(store, HashingEmbedder())
    store.settings.freshness_sla_seconds = 0.001  # the SLA is configuration: a millisecond makes the edit late at once
    store.settings.save()
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("30 days", "14 days"))
    home = str(store.settings.home)

    status = CliRunner().invoke(main, ["--home", home, "status"])
    assert status.exit_code == 0, status.output
    assert "unobserved changes (no watcher or sync saw them yet): 1" in status.output
    assert "company company: 1 changed, 0 added, 0 removed" in status.output
    payload = json.loads(CliRunner().invoke(main, ["--home", home, "status", "--json"]).output)
    assert payload["unobserved_changes"]["count"] == 1

    fresh = CliRunner().invoke(main, ["--home", home, "freshness", "--json", "--check"])
    body = json.loads(fresh.output)
    assert {"stale_hits", "stale_hit_rate", "unobserved_changes"} <= set(body)
    assert body["unobserved_changes"]["sources"][0]["changed"] == 1
    checks = {c["name"]: c["passed"] for c in body["checks"]}
    assert checks["no_unobserved_change_older_than_sla"] is False and fresh.exit_code == 1

    result = dg.materialize([freshness_report_asset], resources={"store": StoreResource(home=home)})
    meta = {k: v.value for k, v in result.asset_materializations_for_node("freshness_report")[-1].metadata.items()}
    assert meta["unobserved_changes"] == 1 and meta["unobserved_oldest_age_s"] > 0
    assert "| company | company | 2 | 1 | 0 | 0 |" in meta["unobserved_by_source"]
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()}["no_unobserved_change_older_than_sla"] is False
