"""Lag timelines, unindexed changes, user-state age, stale hits, checks, reconciliation diffs."""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlmodel import select

from context_store._common import utcnow
from context_store.index.documents import index_pending_documents
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import apply_changes
from context_store.index.lag import record_lags
from context_store.index.users import index_pending_users
from context_store.measure.backlog import reconciliation_diff, unindexed_changes, user_state_ages
from context_store.measure.freshness import evaluate_checks, freshness_report, lag_stats
from context_store.measure.stale_hits import ServedResult, stale_hit_rate, stale_hits
from context_store.state import journal
from context_store.state.documents import sync_company_sources
from context_store.state.user_state import sync_user_sources
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, DocumentVersion, VersionLag
from context_store.store.runs import track_run


def _ingest(store: ContextStore, embedder: HashingEmbedder, paths: list[Path] | None = None) -> None:
    with track_run(store, "company", "version"):
        sync_company_sources(store, paths=paths)
    with track_run(store, "company", "index"):
        index_pending_documents(store, embedder)
    with track_run(store, "user", "version"):
        sync_user_sources(store)
    with track_run(store, "user", "index"):
        index_pending_users(store, embedder)


def _set_mtime(path: Path, when: datetime) -> None:
    os.utime(path, (when.timestamp(), when.timestamp()))


def test_timelines_of_named_documents_and_users_only(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    _ingest(store, fake_embedder)
    assert record_lags(store, doc_ids=["company/refunds.md", "company/never-there.md"], user_ids=[]) == 1
    assert record_lags(store, doc_ids=["company/refunds.md"], user_ids=["u-2"]) == 1  # refunds.md's is written
    with store.session() as s:
        assert {(t.state_kind, t.key) for t in s.exec(select(VersionLag)).all()} == {("company", "company/refunds.md"), ("user", "u-2")}
    assert record_lags(store) == 2  # the rest: invoices.md and u-1


def test_timelines_backfill_lag_and_clock_skew(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    refunds = sources["company"] / "refunds.md"
    _set_mtime(refunds, utcnow() - timedelta(days=30))  # existed long before the store
    _ingest(store, fake_embedder)
    assert record_lags(store) == 4  # 2 documents + 2 users
    assert record_lags(store) == 0  # idempotent
    with store.session() as s:
        first = s.get(VersionLag, s.get(Document, "company/refunds.md").current_version_id)
    assert first.backfill and first.embedded_at is not None and first.fts_indexed_at >= first.committed_at
    assert lag_stats(store, "company").count == 0  # backfill is no pipeline lag

    # an edit made a second before the next look: lag ≈ 1 s plus processing
    time.sleep(0.2)
    refunds.write_text(refunds.read_text().replace("30 days", "14 days"))
    time.sleep(1.0)
    invoices = sources["company"] / "billing" / "invoices.md"
    invoices.write_text(invoices.read_text() + "\nAlso as CSV.\n")
    _set_mtime(invoices, utcnow() + timedelta(hours=1))  # a clock running ahead
    _ingest(store, fake_embedder)
    record_lags(store)
    with store.session() as s:
        edited = s.get(VersionLag, s.get(Document, "company/refunds.md").current_version_id)
        skewed = s.get(VersionLag, s.get(Document, "company/billing/invoices.md").current_version_id)
    assert not edited.backfill and 1.0 <= edited.lag_seconds < 60
    assert edited.source_changed_at <= edited.observed_at <= edited.embedded_at <= edited.committed_at
    assert skewed.clock_skew and skewed.lag_seconds >= 0 and skewed.source_changed_at == skewed.observed_at
    stats = lag_stats(store, "company")
    assert stats.count == 2 and stats.backfill == 2 and stats.max_s >= 1.0


def test_old_mtime_on_a_later_copy_is_clamped_to_our_last_look(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    _ingest(store, fake_embedder)
    refunds = sources["company"] / "refunds.md"
    refunds.write_text("# Refund policy\n\nNo refunds on gift cards.\n")
    _set_mtime(refunds, utcnow() - timedelta(days=400))  # cp -p of an old file
    _ingest(store, fake_embedder)
    record_lags(store)
    with store.session() as s:
        lag = s.get(VersionLag, s.get(Document, "company/refunds.md").current_version_id)
    assert not lag.backfill and lag.lag_seconds < 60


def test_unindexed_changes_come_from_journal_and_pending_versions(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    _ingest(store, fake_embedder)
    assert unindexed_changes(store).count == 0
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text() + "\nNew paragraph.\n")
    sync_company_sources(store, paths=[refunds])  # versioned, not indexed
    new = sources["company"] / "new.md"
    new.write_text("# New\n\nSeen by the watcher, not yet applied.\n")
    journal.append(store, [journal.entry_for_path(store.settings, new)])
    report = unindexed_changes(store, now=utcnow() + timedelta(minutes=10))
    assert report.count == 2 and {i.via for i in report.items} == {"store", "journal"}
    assert report.oldest_age_s >= 599
    outcomes = {o.name: o for o in evaluate_checks(freshness_report(store, now=utcnow() + timedelta(minutes=10)), sla_seconds=300)}
    assert not outcomes["no_unindexed_change_older_than_sla"].passed
    assert outcomes["sources_reachable"].passed


def test_user_state_age_against_max_age(store: ContextStore, fake_embedder: HashingEmbedder) -> None:
    _ingest(store, fake_embedder)  # both snapshots were captured 2026-11-20T10:00Z
    now = datetime(2026, 11, 21, 10, 0, tzinfo=timezone.utc)
    assert not user_state_ages(store, now=now, max_age_hours=72).stale
    late = user_state_ages(store, now=now + timedelta(days=3), max_age_hours=72)
    assert [u for u, _ in late.stale] == ["u-1", "u-2"] or [u for u, _ in late.stale] == ["u-2", "u-1"]
    report = freshness_report(store, now=now + timedelta(days=3))
    outcome = next(o for o in evaluate_checks(report, sla_seconds=300, max_age_hours=72) if o.name == "user_state_within_max_age")
    assert not outcome.passed and "2 of 2" in outcome.detail


def test_stale_hits_compare_serve_time_with_supersession(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    _ingest(store, fake_embedder)
    with store.session() as s:
        v1 = s.get(Document, "company/refunds.md").current_version_id
    before = utcnow()
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("30 days", "14 days"))
    _set_mtime(refunds, utcnow())  # a coarse file clock could stamp the edit a few ms before ``before``
    _ingest(store, fake_embedder)
    with store.session() as s:
        v2 = s.get(Document, "company/refunds.md").current_version_id
        ended = s.get(DocumentVersion, v1).valid_to
    after = utcnow()
    served = [
        ServedResult(v1, before),  # served while current: fine
        (v1, ended),  # served the instant it ended: stale (valid_to <= served_at)
        (v1, after),  # stale
        (v2, after),  # current: fine
        ("v-unknown", after),  # not ours: counted apart
    ]
    hits = stale_hits(store, served)
    assert [(h.version_id, h.served_at) for h in hits] == [(v1, ended), (v1, after)]
    assert hits[0].key == "company/refunds.md" and hits[0].superseded_at == ended
    report = stale_hit_rate(store, served)
    assert (report.served, report.stale, report.unknown) == (5, 2, 1) and report.rate == 0.5
    window = stale_hit_rate(store, served, start=before, end=ended)
    assert (window.served, window.stale, window.rate) == (1, 0, 0.0)
    assert stale_hit_rate(store, []).rate is None


def test_reconciliation_counts_what_the_journal_missed(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    _ingest(store, fake_embedder)
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text() + "\nEdited behind the watcher's back.\n")
    watched = sources["company"] / "billing" / "invoices.md"
    watched.write_text(watched.read_text() + "\nJournaled edit.\n")
    journal.append(store, [journal.entry_for_path(store.settings, watched)])
    (sources["users"] / "u-2.json").unlink()
    since = utcnow()
    _ingest(store, fake_embedder)
    diff = reconciliation_diff(store, since)
    assert (diff["company_changed"], diff["company_new"], diff["user_deleted"]) == (2, 0, 1)
    assert diff["differences"] == 3
    assert diff["missed_by_journal"] == 1 and diff["missed_sample"] == ["company:company/refunds.md"]


def test_missing_root_fails_the_check_and_deletes_nothing(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    _ingest(store, fake_embedder)
    sources["company"].rename(sources["company"].with_name("company-unmounted"))
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="root vanished")])
    result = apply_changes(store, fake_embedder)
    assert result.company.deleted == 0 and result.company.source_errors
    with store.session() as s:
        assert s.get(Document, "company/refunds.md").current_version_id is not None
    outcome = next(o for o in evaluate_checks(freshness_report(store), sla_seconds=300) if o.name == "sources_reachable")
    assert not outcome.passed and str(sources["company"]) in outcome.detail
