"""What the warm path keeps off the write → retrievable path: tree walks, LanceDB optimize, idle threads."""

from __future__ import annotations

from pathlib import Path

import pytest

from context_store import journal, sources as sources_mod
from context_store.embedding import HashingEmbedder
from context_store.retrieval import retrieve
from context_store.settings import SourceConfig
from context_store.store import ContextStore


def _no_walk(*_: object, **__: object) -> None:
    raise AssertionError("a journal batch walked a whole source tree")


def test_a_journal_batch_stats_only_the_files_it_names(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start"),
                           journal.rescan_entry("user", "users", sources["users"], reason="start")])
    journal.apply_changes(store, fake_embedder)
    monkeypatch.setattr(sources_mod.os, "walk", _no_walk)
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("within 30 days", "within 14 days"))
    (sources["company"] / "billing" / "invoices.md").unlink()
    (sources["users"] / "u-2.json").write_text('{"user_id": "u-2", "captured_at": "2026-11-21T10:00:00Z", "account": {"status": "active"}}')
    journal.append(store, [
        journal.entry_for_path(store.settings, refunds),
        journal.entry_for_path(store.settings, sources["company"] / "billing" / "invoices.md", deleted=True),
        journal.entry_for_path(store.settings, sources["users"] / "u-2.json"),
    ])
    result = journal.apply_changes(store, fake_embedder)
    assert (result.company.seen, result.company.changed, result.company.deleted) == (1, 1, 1)
    assert result.users.changed == 1
    assert "14 days" in retrieve(store, fake_embedder, "refund within 14 days", k=1).results[0].text


def test_named_files_are_filtered_as_a_walk_would_filter_them(sources: dict[str, Path]) -> None:
    root = sources["company"]
    (root / ".git").mkdir()
    (root / ".git" / "notes.md").write_text("# hidden\n")
    (root / "draft.md.swp").write_text("x")
    outside = root.parent / "elsewhere.md"
    outside.write_text("# not ours\n")
    source = SourceConfig(name="company", path=root)
    walked = {f.rel_path: f for f in sources_mod.list_source_files(source)}
    named = sources_mod.list_source_files(
        source, only=[root / "refunds.md", root / "billing" / "invoices.md", root / ".git" / "notes.md",
                      root / "draft.md.swp", root / "gone.md", outside, root / "billing"]
    )
    assert [f.rel_path for f in named] == ["billing/invoices.md", "refunds.md"]
    assert all(f == walked[f.rel_path] for f in named)
    assert sources_mod.list_source_files(source, only=[]) == []
