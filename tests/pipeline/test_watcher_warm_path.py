"""What the warm path keeps off the write → retrievable path: tree walks, LanceDB optimize, idle threads."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from sqlmodel import select

from context_store.index import plan
from context_store.index.chunking import Chunk
from context_store.index.documents import index_pending_documents
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.embed.model_files import threads_for_load
from context_store.index.ingest import apply_changes, ingest
from context_store.index.lag import record_lags
from context_store.index.warm import WarmApplier
from context_store.retrieve.retriever import retrieve
from context_store.settings import SourceConfig
from context_store.state import journal
from context_store.state import sources as sources_mod
from context_store.state.documents import sync_company_sources
from context_store.store.context_store import ContextStore
from context_store.store.models import IngestRun, VersionLag
from context_store.store.runs import STAGE_FTS
from pipeline.watcher import SourceWatcher


def _no_walk(*_: object, **__: object) -> None:
    raise AssertionError("a journal batch walked a whole source tree")


def test_a_journal_batch_stats_only_the_files_it_names(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start"),
                           journal.rescan_entry("user", "users", sources["users"], reason="start")])
    apply_changes(store, fake_embedder)
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
    result = apply_changes(store, fake_embedder)
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


def _fts_runs(store: ContextStore) -> list[IngestRun]:
    with store.session() as s:
        return list(s.exec(select(IngestRun).where(IngestRun.stage == STAGE_FTS)).all())


def _edit_and_apply(applier: WarmApplier, store: ContextStore, path: Path, old: str, new: str) -> None:
    path.write_text(path.read_text().replace(old, new))
    journal.append(store, [journal.entry_for_path(store.settings, path)])
    assert applier.apply_once().applied_ids


def test_optimize_runs_off_the_apply_path_and_the_timeline_says_when_fts_covered(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start")])
    applier = WarmApplier(store, fake_embedder, optimize_every=4)
    applier.apply_once()  # two documents, two waves (the first wave holds one chunk to embed)
    refunds = sources["company"] / "refunds.md"
    _edit_and_apply(applier, store, refunds, "within 30 days", "within 14 days")
    assert applier.uncovered_commits == 3 and _fts_runs(store) == []
    # retrievable, by meaning and by words, before any optimize
    assert "14 days" in retrieve(store, fake_embedder, "refund within 14 days", k=1, mode="hybrid").results[0].text
    assert any("14 days" in r["text"] for r in store.index.text_search(store.index.company_table_name, "14 days", 5, columns=["text"]))
    with store.session() as s:
        lags = s.exec(select(VersionLag)).all()
    assert lags and all(lag.fts_indexed_at is None for lag in lags)  # not covered yet, and not claimed

    assert applier.optimize()
    (run,) = _fts_runs(store)
    assert run.status == "succeeded" and run.stats["commits_covered"] == 3 and applier.uncovered_commits == 0
    with store.session() as s:
        lags = s.exec(select(VersionLag)).all()
    assert all(lag.fts_indexed_at is not None and lag.fts_indexed_at >= lag.committed_at for lag in lags)
    assert not applier.optimize()  # nothing left to cover

    # the fourth uncovered commit optimizes at once, inside the apply
    for i in range(4):
        _edit_and_apply(applier, store, refunds, f"within {14 + i} days", f"within {15 + i} days")
    assert len(_fts_runs(store)) == 2 and applier.uncovered_commits == 0


def test_a_version_recorded_after_an_fts_run_finds_it(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start")])
    applier = WarmApplier(store, fake_embedder)
    applier.apply_once()
    with store.session() as s:  # as if the timelines were written later (freshness_report does that)
        for lag in s.exec(select(VersionLag)).all():
            s.delete(lag)
    applier.optimize()
    assert record_lags(store) == 2
    with store.session() as s:
        lags = s.exec(select(VersionLag)).all()
        (run,) = s.exec(select(IngestRun).where(IngestRun.stage == STAGE_FTS)).all()
    assert all(lag.fts_indexed_at == run.finished_at for lag in lags)


def test_stop_leaves_the_tables_covered(store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start")])
    applier = WarmApplier(store, fake_embedder, optimize_idle_s=3600).start()
    applier.apply_once()
    assert applier.uncovered_commits
    applier.stop()
    assert applier.uncovered_commits == 0 and len(_fts_runs(store)) == 1


def test_the_dagster_path_index_run_still_covers_its_own_rows(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start")])
    apply_changes(store, fake_embedder, applied_by="dagster")  # optimize=True, as the assets run it
    record_lags(store)
    with store.session() as s:
        lags = s.exec(select(VersionLag)).all()
        (index_run,) = s.exec(select(IngestRun).where(IngestRun.stage == "index")).all()
    assert lags and all(lag.fts_indexed_at == index_run.finished_at for lag in lags)


def test_one_torch_thread_when_the_machine_is_overloaded() -> None:
    assert threads_for_load(4, load=3.1, cores=2) == 1  # above 1.5 × cores
    assert threads_for_load(4, load=3.0, cores=2) == 4
    assert threads_for_load(2, load=0.2, cores=8) == 2
    assert threads_for_load(3, cores=os.cpu_count()) in (1, 3)  # the machine's own load average


def test_the_warm_path_commits_a_large_batch_in_small_waves(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start")])
    applier = WarmApplier(store, fake_embedder, wave_chunks=1, optimize_every=100)
    result = applier.apply_once()
    # a wave closes once it holds wave_chunks chunks: with one, every document is its own commit
    assert result.company_index.items_indexed == 2 and result.company_index.lancedb_commits == 2
    assert applier.uncovered_commits == 2


def test_cheapest_documents_are_indexed_first_in_waves_that_grow(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    ingest(store, fake_embedder)
    company = sources["company"]
    para = "Invoices list every seat, add-on and credit of the billing period in one table.\n\n"
    (company / "a-long.md").write_text("# Long\n\n" + "".join(f"## Part {i}\n\n{para * 6}" for i in range(6)))
    (company / "b-short.md").write_text("# Short\n\nParcels to Norway take nine working days.\n")
    (company / "c-medium.md").write_text("# Medium\n\n" + "".join(f"## Step {i}\n\n{para}" for i in range(2)))
    (company / "billing" / "invoices.md").unlink()
    sync_company_sources(store)
    report = index_pending_documents(store, fake_embedder, wave_chunks=1, optimize=False)
    # nothing to embed first (a deletion), then by text to embed, whatever the names say
    assert report.indexed_ids == ["company/billing/invoices.md", "company/b-short.md", "company/c-medium.md", "company/a-long.md"]
    assert report.lancedb_commits == 4  # the deletion embeds nothing: it commits first, in a wave of its own


def _pending(doc_id: str, hashes: list[str]) -> plan.PendingDocument:
    return plan.PendingDocument(doc_id, "article", None, [Chunk(i, f"{doc_id}#{h}", h, "", h * 10) for i, h in enumerate(hashes)])


def test_waves_count_only_chunks_to_embed_and_double_up_to_the_wave_size() -> None:
    docs = [_pending(f"d{i}", [f"h{i}"]) for i in range(7)] + [_pending("cached", ["c1", "c2", "c3"])]
    waves = list(plan.waves(docs, 4, {"c1", "c2", "c3"}, 1))
    assert [[p.doc_id for p in w] for w in waves] == [["d0"], ["d1", "d2"], ["d3", "d4", "d5", "d6"], ["cached"]]
    # a chunk shared by two documents is embedded once, so it counts once
    shared = list(plan.waves([_pending("x", ["s"]), _pending("y", ["s"]), _pending("z", ["t"])], 8, set(), 2))
    assert [[p.doc_id for p in w] for w in shared] == [["x", "y", "z"]]
    # documents with nothing to embed lead, and wait for no model call; later ones ride along
    free = list(plan.waves([_pending("gone", []), _pending("same", ["c1"]), _pending("a", ["h"]), _pending("b", ["c2"])], 8, {"c1", "c2"}, 2))
    assert [[p.doc_id for p in w] for w in free] == [["gone", "same"], ["a", "b"]]


def test_the_applier_waits_for_the_watchers_backlog_but_not_forever(store: ContextStore, fake_embedder: HashingEmbedder) -> None:
    left = iter([3, 2, 1, 0])
    draining = WarmApplier(store, fake_embedder, backlog=lambda: next(left), settle_s=5.0)
    started = time.monotonic()
    draining.settle()
    assert next(left, "drained") == "drained" and time.monotonic() - started < 1.0
    stuck = WarmApplier(store, fake_embedder, backlog=lambda: 1, settle_s=0.3)
    started = time.monotonic()
    stuck.settle()
    assert 0.3 <= time.monotonic() - started < 1.0


def test_the_watchers_backlog_counts_paths_until_their_rows_are_written(
    store: ContextStore, sources: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, int] = {}
    watcher = SourceWatcher(
        store, debounce_s=0.0, burst_gap_s=0.0, on_journal=lambda _n: seen.setdefault("on_journal", watcher.backlog())
    )
    append = journal.append

    def spying_append(*args: object, **kwargs: object) -> int:
        seen["while_writing"] = watcher.backlog()
        return append(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(journal, "append", spying_append)
    watcher.note(str(sources["company"] / "refunds.md"))
    assert watcher.backlog() == 1
    assert watcher.flush() == 1
    # taken off the pending map but not yet written still counts; once written (when the applier is woken) it does not
    assert seen == {"while_writing": 1, "on_journal": 0} and watcher.backlog() == 0


def test_a_closed_file_is_journaled_at_once_and_the_rest_of_its_burst_after_the_quiet_time(
    store: ContextStore, sources: dict[str, Path]
) -> None:
    watcher = SourceWatcher(store, debounce_s=60.0, burst_gap_s=60.0)
    refunds, shipping = str(sources["company"] / "refunds.md"), str(sources["company"] / "shipping.md")
    watcher.note(refunds, writing=True)
    assert watcher.flush() == 0  # still open for writing
    watcher.note(refunds)  # closed: final, no quiet time to wait
    assert watcher.flush() == 1
    assert watcher.backlog() == 1  # events arrived within burst_gap_s: more of the burst may follow
    watcher.note(refunds, writing=True)
    with open(refunds, "a", encoding="utf-8") as fh:
        fh.write("\nRefunds take five days.\n")  # a new state: its row is no duplicate of the first
    watcher.note(refunds)  # closed again within debounce_s: a burst, held until quiet
    watcher.note(shipping, deleted=True)  # deletions wait too (git deletes, then recreates)
    assert watcher.flush() == 0 and watcher.backlog() == 3
    assert watcher.flush(force=True) == 2
    quiet = SourceWatcher(store, debounce_s=60.0, burst_gap_s=0.0)
    assert quiet.backlog() == 0
