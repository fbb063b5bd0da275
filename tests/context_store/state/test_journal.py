"""The change journal: idempotent appends, coalescing, and the warm apply path."""

from __future__ import annotations

from pathlib import Path

from sqlmodel import select

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import apply_changes
from context_store.retrieve.retriever import retrieve
from context_store.state import journal
from context_store.store.context_store import ContextStore
from context_store.store.models import ChangeEvent, Document, IngestRun, UserRecord


def _rows(store: ContextStore) -> list[ChangeEvent]:
    return journal.read_after(store, 0)


def test_append_is_idempotent_per_file_state(store: ContextStore, sources: dict[str, Path]) -> None:
    path = sources["company"] / "refunds.md"
    entry = journal.entry_for_path(store.settings, path)
    assert entry is not None and entry.state_kind == "company" and entry.event == "changed"
    assert journal.append(store, [entry, entry]) == 1
    assert journal.append(store, [journal.entry_for_path(store.settings, path)]) == 0  # a restart re-reports it
    path.write_text(path.read_text() + "\nOne more line.\n")
    assert journal.append(store, [journal.entry_for_path(store.settings, path)]) == 1
    path.unlink()
    gone = journal.entry_for_path(store.settings, path)
    assert gone is not None and gone.event == "deleted"
    assert journal.append(store, [gone]) == 1
    assert [r.event for r in _rows(store)] == ["changed", "changed", "deleted"]


def test_only_inputs_are_journaled(store: ContextStore, sources: dict[str, Path], tmp_path: Path) -> None:
    company, users = sources["company"], sources["users"]
    for name in (".refunds.md.swp", "refunds.md~", "notes.tmp", "4913"):
        (company / name).write_text("editor noise")
        assert journal.entry_for_path(store.settings, company / name) is None, name
    (company / ".git").mkdir()
    (company / ".git" / "HEAD").write_text("ref")
    assert journal.entry_for_path(store.settings, company / ".git" / "HEAD") is None
    outside = tmp_path / "elsewhere.md"
    outside.write_text("# not a source")
    assert journal.entry_for_path(store.settings, outside) is None
    user = journal.entry_for_path(store.settings, users / "u-1.json")
    assert user is not None and (user.state_kind, user.source_name) == ("user", "users")


def test_a_burst_of_events_coalesces_into_one_batch_per_kind(store: ContextStore, sources: dict[str, Path]) -> None:
    company = sources["company"]
    entries = []
    for i in range(1000):
        path = company / f"page-{i % 10}.md"
        path.write_text(f"# Page {i % 10}\n\nrevision {i}\n")
        entries.append(journal.JournalEntry("company", "company", str(path.resolve()), "changed", f"fp-{i}"))
    entries.append(journal.entry_for_path(store.settings, sources["users"] / "u-2.json"))
    assert journal.append(store, entries) == 1001
    batches = journal.coalesce(_rows(store))
    assert set(batches) == {"company", "user"}
    assert len(batches["company"].paths) == 10 and batches["company"].events == 1000 and not batches["company"].full_scan
    assert batches["user"].paths == [str((sources["users"] / "u-2.json").resolve())]


def test_rescans_and_huge_batches_become_full_scans(store: ContextStore, sources: dict[str, Path]) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="watcher started")])
    batch = journal.coalesce(_rows(store))["company"]
    assert batch.full_scan and batch.sync_paths() is None
    many = [
        journal.JournalEntry("user", "users", f"/x/{i}.json", "changed", f"u{i}") for i in range(journal.MAX_PATHS_PER_RUN + 1)
    ]
    journal.append(store, many)
    assert journal.coalesce(journal.read_after(store, 0, state_kind="user"))["user"].full_scan


def test_warm_apply_versions_indexes_and_marks_rows(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start"),
                           journal.rescan_entry("user", "users", sources["users"], reason="start")])
    first = apply_changes(store, fake_embedder)
    assert first.company.new == 2 and first.users.new == 2 and sorted(first.full_scans) == ["company", "user"]
    assert all(r.applied_by == "warm" and r.applied_at for r in _rows(store))

    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("within 30 days", "within 14 days"))
    journal.append(store, [journal.entry_for_path(store.settings, refunds)])
    cursor = first.cursor
    second = apply_changes(store, fake_embedder, cursor=cursor)
    assert second.company.changed == 1 and second.company.seen == 1  # only the journaled file was read
    assert second.company_index.chunks_embedded == 1
    hits = retrieve(store, fake_embedder, "refund within 14 days of delivery", k=3).results
    assert "14 days" in hits[0].text
    assert apply_changes(store, fake_embedder, cursor=second.cursor).applied_ids == []  # nothing left

    with store.session() as s:
        trigger = {r.trigger for r in s.exec(select(IngestRun)).all()}
    assert trigger == {"watch"}  # recorded in the same run log Dagster's assets use


def test_user_churn_never_touches_company_documents(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start"),
                           journal.rescan_entry("user", "users", sources["users"], reason="start")])
    apply_changes(store, fake_embedder)
    with store.session() as s:
        company_runs = len(s.exec(select(IngestRun).where(IngestRun.state_kind == "company")).all())
    u1 = sources["users"] / "u-1.json"
    u1.write_text(u1.read_text().replace('"shipped"', '"delivered"'))
    journal.append(store, [journal.entry_for_path(store.settings, u1)])
    result = apply_changes(store, fake_embedder)
    assert result.company is None and result.users.changed == 1
    with store.session() as s:
        assert len(s.exec(select(IngestRun).where(IngestRun.state_kind == "company")).all()) == company_runs
        assert s.get(UserRecord, "u-1").current_version_id == s.get(UserRecord, "u-1").indexed_version_id


def test_partial_write_is_returned_for_retry_and_stored_text_keeps_serving(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start")])
    apply_changes(store, fake_embedder)
    refunds = sources["company"] / "refunds.md"
    refunds.write_bytes("# Refund policy\n\nCaf\u00e9 ".encode()[:-2])  # cut inside a UTF-8 sequence
    journal.append(store, [journal.entry_for_path(store.settings, refunds)])
    result = apply_changes(store, fake_embedder)
    assert [r.path for r in result.retry] == [str(refunds.resolve())]
    with store.session() as s:
        doc = s.get(Document, "company/refunds.md")
        assert doc.current_version_id and doc.current_version_id == doc.indexed_version_id
    retry = journal.retry_entry(result.retry[0], 1)
    refunds.write_text("# Refund policy\n\nRefunds within 14 days.\n")  # the writer finished
    assert journal.append(store, [retry]) == 1
    assert apply_changes(store, fake_embedder).company.changed == 1


def test_prune_keeps_unapplied_rows(store: ContextStore, sources: dict[str, Path]) -> None:
    from datetime import timedelta

    from context_store._common import utcnow

    _ = [journal.append(store, [journal.entry_for_path(store.settings, p)]) for p in (sources["company"] / "refunds.md", sources["users"] / "u-1.json")]
    journal.mark_applied(store, by="warm", state_kind="company")
    assert journal.prune(store, older_than=utcnow() + timedelta(seconds=1)) == 1
    assert [r.state_kind for r in _rows(store)] == ["user"]
