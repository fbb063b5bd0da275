"""Stale exposure, honestly: a result served after its source changed is a stale hit once the pipeline
learns of the change, whether or not the pipeline knew when it served it.

The scenario of issue 15: serve through the API, edit the source with no watcher running, serve
again (the old text: nobody told the pipeline), reconcile through Dagster, and measure again.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
from click.testing import CliRunner
from fastapi.testclient import TestClient

from assets.resources import StoreResource
from context_store.index.embed.fake import HashingEmbedder
from context_store.measure.freshness import evaluate_checks, freshness_report
from context_store.store.context_store import ContextStore
from pipeline.cli import main
from pipeline.definitions import FRESHNESS_ASSETS, INGEST_ASSETS, INGEST_CHECKS
from pipeline.jobs import reconcile_job
from service.app import create_app
from tests.conftest import open_on_sources

KEY = {"X-API-Key": "test-key"}
REFUNDS = "company/refunds.md"


class _Fixed:
    def __init__(self, embedder: HashingEmbedder) -> None:
        self.embedder = embedder

    def for_store(self, store: ContextStore) -> HashingEmbedder:
        return self.embedder


def _reconcile(store: ContextStore, embedder: HashingEmbedder, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    defs = dg.Definitions(
        assets=[*INGEST_ASSETS, *FRESHNESS_ASSETS], asset_checks=INGEST_CHECKS, jobs=[reconcile_job],
        resources={"store": StoreResource(home=str(store.settings.home)),
                   "embedder": dg.ResourceDefinition.hardcoded_resource(_Fixed(embedder))},
    )
    result = defs.resolve_job_def("reconcile_job").execute_in_process(instance=instance)
    assert result.success
    return result


def test_served_before_reconciliation_counts_once_the_pipeline_learns(sources: dict[str, Path]) -> None:
    embedder = HashingEmbedder()
    store = open_on_sources(
        sources,
        api_keys=["test-key"],
        retrieval={"refresh_interval_seconds": 0.0},
    )
    store.settings.save()
    instance = dg.DagsterInstance.ephemeral()
    _reconcile(store, embedder, instance)
    client = TestClient(create_app(store=store, embedder=embedder))

    def ask() -> list[dict[str, object]]:
        body = client.post("/v1/retrieve", json={"query": "refund window days", "user_id": "u-1", "k": 5}, headers=KEY).json()
        return body["results"]

    before_edit = ask()
    assert any(r["doc_id"] == REFUNDS for r in before_edit)
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("within 30 days", "within 14 days"))  # no watcher runs
    after_edit = ask()
    stale_served = [r for r in after_edit if r["doc_id"] == REFUNDS]
    assert stale_served and all("30 days" in r["text"] or "14 days" not in r["text"] for r in stale_served)

    # the pipeline does not know yet: nothing it can call stale, but the scan sees the edit
    unaware = freshness_report(store)
    assert unaware.stale.rate == 0.0 and unaware.stale.stale == 0
    assert unaware.unobserved.count == 1 and unaware.unobserved.sources[0].items[0].path == str(refunds)

    # the hourly reconciliation finds the edit: what was served after it becomes a stale hit
    result = _reconcile(store, embedder, instance)
    checks = {e.check_name: e for e in result.get_asset_check_evaluations() if e.asset_key.path[-1] == "freshness_report"}
    assert checks["no_stale_hits"].passed is False and checks["no_unobserved_change_older_than_sla"].passed
    aware = freshness_report(store)
    served = len(before_edit) + len(after_edit) + 2  # every chunk and the user's snapshot of both responses
    assert aware.stale.served == served and aware.stale.stale == len(stale_served)
    assert aware.stale.rate is not None and aware.stale.rate > 0 and aware.stale.rate == len(stale_served) / served
    assert aware.unobserved.count == 0
    hit = aware.stale.hits[0]
    assert hit.key == REFUNDS and hit.changed_at is not None and hit.changed_at <= hit.served_at < hit.superseded_at
    (exposure,) = aware.stale.exposed()
    assert exposure.key == REFUNDS and exposure.hits == len(stale_served) and exposure.minutes >= 0
    outcome = {o.name: o for o in evaluate_checks(aware, sla_seconds=300)}["no_stale_hits"]
    assert not outcome.passed and REFUNDS in outcome.detail and "source had already changed" in outcome.detail

    payload = json.loads(CliRunner().invoke(main, ["--home", str(store.settings.home), "freshness", "--json"]).output)
    assert payload["stale_hit_rate"] == aware.stale.rate and payload["unobserved_changes"]["count"] == 0
    assert payload["stale_hits"]["hits"][0]["key"] == REFUNDS and payload["stale_hits"]["exposure"][0]["hits"] == len(stale_served)


def _versions(store: ContextStore, doc_id: str) -> list[object]:
    from context_store.state import document_versions

    return document_versions(store, doc_id)


def test_the_change_time_is_the_earliest_evidence_and_never_an_old_mtime(store: ContextStore, sources: dict[str, Path]) -> None:
    """On a clock of our own: the store saw the tree an hour ago (``base``), edits came after."""
    import os
    from datetime import timedelta

    from context_store._common import utcnow
    from context_store.measure.stale_hits import stale_hit_rate
    from context_store.state import journal, sync_company_sources

    def sync(at: object) -> None:
        sync_company_sources(store, now=at)  # type: ignore[arg-type]

    def edit(old: str, new: str, at: object) -> None:
        refunds.write_text(refunds.read_text().replace(old, new))
        os.utime(refunds, (at.timestamp(), at.timestamp()))  # type: ignore[attr-defined]

    def s(seconds: float) -> object:
        return base + timedelta(seconds=seconds)

    base = utcnow() - timedelta(hours=1)
    refunds = sources["company"] / "refunds.md"
    os.utime(refunds, (base.timestamp() - 60, base.timestamp() - 60))
    sync(base)
    v1 = _versions(store, REFUNDS)[-1].version_id  # type: ignore[attr-defined]
    edit("30 days", "21 days", s(10))
    journal.append(store, [journal.entry_for_path(store.settings, refunds)])  # the watcher saw the first edit
    edit("21 days", "14 days", s(30))  # the second one nobody journaled
    sync(s(60))
    report = stale_hit_rate(store, [(v1, s(0)), (v1, s(20)), (v1, s(40))])
    # served at +20 s: after the first (journaled) edit, before the second (the new version's mtime)
    assert [h.served_at for h in report.hits] == [s(20), s(40)]
    assert report.hits[0].changed_at == s(10) and report.hits[0].superseded_at == s(60)
    (exposure,) = report.exposed()
    assert exposure.hits == 2 and exposure.minutes == 0.5  # from the first edit to the last stale serve

    # without the journal row, only the closing version's mtime is evidence: +20 s was still fresh
    with store.session() as session:
        from sqlmodel import delete

        from context_store.store.models import ChangeEvent

        session.exec(delete(ChangeEvent))  # type: ignore[call-overload]
    assert [h.served_at for h in stale_hit_rate(store, [(v1, s(20)), (v1, s(40))]).hits] == [s(40)]

    # a copy that kept an old mtime is no evidence: the change counts from when the pipeline saw it
    v2 = _versions(store, REFUNDS)[-1].version_id  # type: ignore[attr-defined]
    edit("14 days", "10 days", base - timedelta(days=400))
    sync(s(120))
    late = stale_hit_rate(store, [(v2, s(90)), (v2, s(120))])
    assert [h.served_at for h in late.hits] == [s(120)] and late.hits[0].changed_at == s(120)


def test_a_user_snapshot_served_after_its_file_changed_is_a_stale_hit(store: ContextStore, sources: dict[str, Path]) -> None:
    import os
    from datetime import timedelta

    from context_store._common import utcnow
    from context_store.index.ingest import ingest
    from context_store.index.lag import record_lags
    from context_store.measure.stale_hits import stale_hit_rate
    from context_store.store.models import UserRecord

    embedder = HashingEmbedder()
    ingest(store, embedder)
    with store.session() as session:
        old = session.get(UserRecord, "u-1").current_version_id  # type: ignore[union-attr]
    before = utcnow()
    u1 = sources["users"] / "u-1.json"
    u1.write_text(u1.read_text().replace('"shipped"', '"delivered"'))
    edited = before + timedelta(milliseconds=5)
    os.utime(u1, (edited.timestamp(), edited.timestamp()))
    after = edited + timedelta(milliseconds=5)
    ingest(store, embedder)
    record_lags(store)  # the closing snapshot's timeline says when its file changed
    report = stale_hit_rate(store, [(old, before), (old, after)])
    assert [(h.state_kind, h.key, h.served_at) for h in report.hits] == [("user", "u-1", after)]
    assert before < report.hits[0].changed_at <= after  # type: ignore[operator]
