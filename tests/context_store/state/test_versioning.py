"""Versioning and incremental indexing on the core, with the fast fake embedder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from sqlmodel import select

from context_store.index.documents import index_pending_documents
from context_store.index.drift import index_drift
from context_store.index.ingest import ingest
from context_store.retrieve.retriever import retrieve
from context_store.state.documents import sync_company_sources
from context_store.state.skipped_inputs import open_skips
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, DocumentVersion, UserSnapshotVersion
from tests.conftest import REFUNDS_V1

# every test here runs on SQLite + a local LanceDB folder and on PostgreSQL + LanceDB on S3
pytestmark = pytest.mark.all_backends


def texts(store: ContextStore, embedder, query: str, k: int = 10) -> list[str]:  # type: ignore[no-untyped-def]
    return [h.text for h in retrieve(store, embedder, query, k=k).results]


def test_first_ingest_versions_and_indexes_everything(store, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    report = ingest(store, fake_embedder)
    assert report.company.new == 2 and report.users.new == 2
    assert report.company_index.chunks_embedded == report.company_index.chunks_total > 0
    assert all(d.ok for d in index_drift(store))


def test_edit_one_paragraph_reembeds_only_changed_chunks(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    before = fake_embedder.texts_embedded
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("within 30 days", "within 14 days"))
    report = ingest(store, fake_embedder)
    assert report.company.changed == 1 and report.company.unchanged == 1
    assert report.company_index.chunks_embedded == 1 == fake_embedder.texts_embedded - before
    found = texts(store, fake_embedder, "refund within days of delivery")
    assert any("14 days" in t for t in found)
    assert not any("30 days" in t for t in found)


def test_old_versions_stay_readable(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", "14 days"))
    ingest(store, fake_embedder)
    with store.session() as s:
        versions = s.exec(select(DocumentVersion).where(DocumentVersion.doc_id == "company/refunds.md").order_by(DocumentVersion.valid_from)).all()
    assert len(versions) == 2
    assert "30 days" in versions[0].text and versions[0].valid_to == versions[1].valid_from
    assert "14 days" in versions[1].text and versions[1].valid_to is None


def test_noop_ingest_embeds_and_commits_nothing(store, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    calls = fake_embedder.calls
    versions = store.index.versions()
    report = ingest(store, fake_embedder)
    assert report.company.unchanged == 2 and report.users.unchanged == 2
    assert fake_embedder.calls == calls and store.index.versions() == versions


def test_delete_ends_the_document_and_removes_its_rows(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    (sources["company"] / "billing" / "invoices.md").unlink()
    report = ingest(store, fake_embedder)
    assert report.company.deleted == 1
    assert not any("Invoices are under Billing" in t for t in texts(store, fake_embedder, "invoices pdf billing history"))
    with store.session() as s:
        doc = s.get(Document, "company/billing/invoices.md")
        assert doc.current_version_id is None and doc.deleted_at is not None
        assert s.exec(select(DocumentVersion).where(DocumentVersion.doc_id == doc.doc_id)).one().valid_to is not None
    assert all(d.ok for d in index_drift(store))


def test_a_path_sync_ends_only_the_named_files_that_are_gone(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    company = sources["company"]
    (company / "shipping.md").write_text("# Shipping\n\nParcels leave within two days.\n")
    ingest(store, fake_embedder)
    invoices, refunds, shipping = company / "billing" / "invoices.md", company / "refunds.md", company / "shipping.md"
    invoices.unlink()
    shipping.unlink()
    refunds.write_text(refunds.read_text() + "\nMore.\n")
    report = sync_company_sources(store, paths=[invoices, refunds, company / "never-there.md"])
    assert (report.seen, report.changed, report.deleted) == (1, 1, 1)
    assert report.changed_doc_ids == ["company/refunds.md", "company/billing/invoices.md"]
    with store.session() as s:
        # shipping.md is gone too, but this sync was not told: the next full scan ends it
        assert s.get(Document, "company/shipping.md").current_version_id is not None
        assert s.get(Document, "company/billing/invoices.md").current_version_id is None
    assert sync_company_sources(store).deleted == 1


def test_a_path_sync_keeps_a_named_file_that_is_still_there_but_no_input(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    invoices = sources["company"] / "billing" / "invoices.md"
    target = sources["company"] / "billing" / "invoices-2026.md"
    invoices.rename(target)
    invoices.symlink_to(target)  # a link inside the root is never read as itself; its target is
    report = sync_company_sources(store, paths=[invoices])
    assert (report.new, report.deleted) == (1, 0)
    with store.session() as s:
        assert s.get(Document, "company/billing/invoices-2026.md").current_version_id is not None
        assert s.get(Document, "company/billing/invoices.md").current_version_id is not None
    assert sync_company_sources(store).deleted == 1  # the full scan lists no invoices.md


def test_rename_reuses_embeddings(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    calls = fake_embedder.texts_embedded
    shutil.move(sources["company"] / "refunds.md", sources["company"] / "refund-policy.md")
    report = ingest(store, fake_embedder)
    assert report.company.renamed == 1 and report.company.deleted == 1 and report.company.new == 1
    assert report.company_index.chunks_embedded == 0 and fake_embedder.texts_embedded == calls
    with store.session() as s:
        assert s.get(Document, "company/refund-policy.md").renamed_from == "company/refunds.md"
    assert {h.doc_id for h in retrieve(store, fake_embedder, "refund window", k=10).results} == {"company/refund-policy.md", "company/billing/invoices.md"}


def test_bad_files_are_skipped_and_stored_versions_survive(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    company = sources["company"]
    (company / "refunds.md").write_bytes(b"\xff\xfe not utf-8 any more")
    (company / "logo.md").write_bytes(b"\x89PNG\x00\x00\x00")
    (sources["users"] / "u-1.json").write_text("{broken")
    report = ingest(store, fake_embedder)
    assert {s["reason"] for s in report.company.skipped_inputs} == {"invalid_utf8", "binary"}
    assert report.users.skipped == 1 and report.users.deleted == 0
    # the last good version of the article and of u-1 keep serving
    assert any("30 days" in t for t in texts(store, fake_embedder, "refund within 30 days"))
    assert retrieve(store, fake_embedder, "order", user_id="u-1").user_state
    with store.session() as s:
        assert {k.reason for k in open_skips(s)} == {"invalid_utf8", "binary", "malformed_json"}
    # fixing a file resolves its skip
    (company / "refunds.md").write_text(REFUNDS_V1)
    ingest(store, fake_embedder)
    with store.session() as s:
        assert {k.reason for k in open_skips(s)} == {"binary", "malformed_json"}


def test_missing_root_is_an_error_not_a_mass_deletion(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    shutil.move(sources["company"], sources["company"].with_name("company-unmounted"))
    report = sync_company_sources(store)
    assert report.deleted == 0 and report.source_errors and "does not exist" in report.source_errors[0]
    with store.session() as s:
        assert all(d.current_version_id for d in s.exec(select(Document)).all())


def test_user_snapshot_update_makes_a_new_version(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    (sources["users"] / "u-1.json").write_text(
        '{"user_id": "u-1", "captured_at": "2026-11-21T10:00:00Z", "account": {"status": "active", "plan": "Plus"},'
        ' "orders": [{"order_id": "A-1", "status": "delivered", "carrier": "DHL"}]}'
    )
    report = ingest(store, fake_embedder)
    assert report.users.changed == 1 and report.users.unchanged == 1
    state = retrieve(store, fake_embedder, "where is my order", user_id="u-1").user_state
    joined = " ".join(f.text for f in state)
    assert "delivered" in joined and "shipped" not in joined
    with store.session() as s:
        assert len(s.exec(select(UserSnapshotVersion).where(UserSnapshotVersion.user_id == "u-1")).all()) == 2


def test_user_state_is_only_returned_for_its_user(store, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    u2 = retrieve(store, fake_embedder, "order shipped DHL account", user_id="u-2").user_state
    assert u2 and all("A-1" not in f.text for f in u2)
    assert any("locked" in f.text for f in u2)


def test_interrupted_index_is_repaired_by_the_next_run(store, sources, fake_embedder, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", "14 days"))
    sync_company_sources(store)

    def crash(*_a, **_k):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt("killed between the SQL and LanceDB commits")

    monkeypatch.setattr(store.index, "replace_documents", crash)
    try:
        index_pending_documents(store, fake_embedder)
    except KeyboardInterrupt:
        pass
    assert not next(d for d in index_drift(store) if d.table == "company_chunks").ok
    monkeypatch.undo()
    report = index_pending_documents(store, fake_embedder)
    assert report.items_indexed == 1 and report.chunks_embedded == 0  # the embedding survived the crash
    assert all(d.ok for d in index_drift(store))


def test_settings_round_trip(tmp_path: Path) -> None:
    from context_store.settings import Settings

    s = Settings.load(tmp_path, company_sources=[{"name": "kb", "path": "kb"}])
    assert s.company_sources[0].path == (tmp_path / "kb").resolve()
    s.save()
    again = Settings.load(tmp_path)
    assert again.company_sources == s.company_sources and again.sql_url.endswith("freshcontext.db")


def test_index_restricted_to_doc_ids_leaves_the_rest_pending(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", "14 days"))
    (sources["company"] / "billing" / "invoices.md").write_text("# Invoices\n\n## Download\n\nInvoices are emailed monthly.\n")
    sync_company_sources(store)
    report = index_pending_documents(store, fake_embedder, doc_ids=["company/refunds.md", "company/no-such-doc.md"], optimize=False)
    assert report.indexed_ids == ["company/refunds.md"]
    assert any("14 days" in t for t in texts(store, fake_embedder, "refund window"))
    with store.session() as s:
        invoices = s.get(Document, "company/billing/invoices.md")
        assert invoices is not None and invoices.indexed_version_id != invoices.current_version_id  # not ours: still pending
    # the other document is pending, not drift: strictly out of sync, but every difference is its own
    drift = next(d for d in index_drift(store) if d.table == "company_chunks")
    assert not drift.ok and drift.pending == ["company/billing/invoices.md"] and drift.unexplained == []
    assert index_pending_documents(store, fake_embedder).indexed_ids == ["company/billing/invoices.md"]
    assert all(d.ok and not d.pending for d in index_drift(store))


def test_drift_of_an_indexed_document_is_unexplained(store, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    ingest(store, fake_embedder)
    store.index.replace_documents(["company/refunds.md"], [], fake_embedder.dim)  # rows lost behind SQL's back
    drift = next(d for d in index_drift(store) if d.table == "company_chunks")
    assert not drift.pending and drift.unexplained and all(i.startswith("company/refunds.md#") for i in drift.unexplained)


def test_index_check_passes_with_another_writers_pending_document_and_fails_on_drift(store, sources, fake_embedder) -> None:  # type: ignore[no-untyped-def]
    from assets.ingestion import company_index_matches_store
    from assets.resources import StoreResource

    ingest(store, fake_embedder)
    # after this run indexed, a serving replica versioned a staff answer it has not indexed yet
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", "14 days"))
    sync_company_sources(store)
    resource = StoreResource(home=str(store.settings.home))
    result = company_index_matches_store(store=resource)
    assert result.passed and result.metadata["pending_documents"].value == 1 and result.metadata["missing"].value > 0
    store.index.replace_documents(["company/billing/invoices.md"], [], fake_embedder.dim)
    result = company_index_matches_store(store=resource)
    assert not result.passed and result.metadata["unexplained"].value > 0
