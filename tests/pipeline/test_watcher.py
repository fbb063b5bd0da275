"""The watcher on real folders: editor save patterns, bursts, polling, missing roots, warm apply."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.warm import WarmApplier
from context_store.retrieve.retriever import retrieve
from context_store.state import journal
from context_store.store.context_store import ContextStore
from context_store.store.models import Document
from pipeline.watcher import SourceWatcher, filesystem_type, observer_mode_for


def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def changed_paths(store: ContextStore) -> list[str]:
    return [r.path for r in journal.read_after(store, 0) if r.event != "rescan"]


@pytest.fixture
def watcher(store: ContextStore) -> Iterator[SourceWatcher]:
    w = SourceWatcher(store, debounce_s=0.3).start(rescan=False)
    yield w
    w.stop()


def test_editor_save_pattern_and_bursts_become_one_row(store: ContextStore, sources: dict[str, Path], watcher: SourceWatcher) -> None:
    company = sources["company"]
    target = company / "refunds.md"
    # vim/VS Code style: write a hidden temp file, then rename it over the original
    tmp = company / ".refunds.md.swp"
    tmp.write_text("# Refund policy\n\nRefunds within 14 days.\n")
    os.replace(tmp, target)
    for i in range(300):  # a burst of modify events on one file
        with (company / "billing" / "invoices.md").open("a") as fh:
            fh.write(f"line {i}\n")
    assert wait_for(lambda: len(changed_paths(store)) >= 2)
    time.sleep(0.5)
    paths = changed_paths(store)
    assert set(paths) == {str(p.resolve()) for p in (target, company / "billing" / "invoices.md")}
    # 300 writes are two rows (the first close at once, the rest after the quiet window) unless the machine stalls mid-burst
    assert len(paths) <= 4 and watcher.stats.events > 300


def test_delete_and_move_are_journaled(store: ContextStore, sources: dict[str, Path], watcher: SourceWatcher) -> None:
    company = sources["company"]
    (company / "billing" / "invoices.md").rename(company / "billing" / "invoice-download.md")
    (company / "refunds.md").unlink()
    assert wait_for(lambda: len(changed_paths(store)) >= 3)
    events = {Path(r.path).name: r.event for r in journal.read_after(store, 0)}
    assert events == {"invoices.md": "deleted", "invoice-download.md": "changed", "refunds.md": "deleted"}


def test_polling_observer_sees_changes_inotify_would_miss(store: ContextStore, sources: dict[str, Path]) -> None:
    with SourceWatcher(store, mode="polling", poll_interval_s=0.3, debounce_s=0.1) as w:
        assert set(w.modes().values()) == {"polling"}
        time.sleep(0.5)
        (sources["users"] / "u-3.json").write_text('{"user_id": "u-3", "account": {"status": "active"}}')
        assert wait_for(lambda: any(p.endswith("u-3.json") for p in changed_paths(store)))
    (row,) = [r for r in journal.read_after(store, 0) if r.path.endswith("u-3.json")]
    assert row.state_kind == "user"


def test_observer_mode_follows_the_filesystem(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text("/dev/sda1 / ext4 rw 0 0\nserver:/export /mnt/kb nfs4 rw 0 0\n")
    assert filesystem_type("/mnt/kb/help", str(mounts)) == "nfs4"
    assert filesystem_type("/srv/help", str(mounts)) == "ext4"
    assert observer_mode_for(tmp_path, "polling") == "polling"
    assert observer_mode_for(tmp_path, "inotify") == "inotify"


def test_start_rescans_and_a_missing_root_is_reported_not_fatal(store: ContextStore, sources: dict[str, Path]) -> None:
    users = sources["users"]
    users.rename(users.with_name("users-unmounted"))
    w = SourceWatcher(store, root_check_s=0.2).start()
    try:
        assert w.missing_roots == {str(users.resolve())}
        rows = journal.read_after(store, 0)
        assert [(r.state_kind, r.event) for r in rows] == [("company", "rescan")]
        users.with_name("users-unmounted").rename(users)  # mounted again
        assert wait_for(lambda: any(r.state_kind == "user" and r.event == "rescan" for r in journal.read_after(store, 0)))
        assert not w.missing_roots
    finally:
        w.stop()


def test_watcher_with_warm_apply_makes_an_edit_retrievable(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    applier = WarmApplier(store, fake_embedder, interval_s=0.5).start()
    w = SourceWatcher(store, on_journal=applier.wake).start()
    try:
        def current(doc_id: str) -> Document | None:
            with store.session() as s:
                return s.get(Document, doc_id)

        assert wait_for(lambda: (d := current("company/refunds.md")) is not None and d.indexed_version_id is not None)
        started = time.monotonic()
        (sources["company"] / "shipping.md").write_text("# Shipping\n\nParcels to Norway take nine working days.\n")
        assert wait_for(lambda: (d := current("company/shipping.md")) is not None and d.indexed_version_id == d.current_version_id)
        assert time.monotonic() - started < 5
        hits = retrieve(store, fake_embedder, "parcels to Norway working days", k=1).results
        assert hits[0].doc_id == "company/shipping.md"
        (sources["company"] / "shipping.md").unlink()
        assert wait_for(lambda: current("company/shipping.md").indexed_version_id is None)
        assert all(h.doc_id != "company/shipping.md" for h in retrieve(store, fake_embedder, "parcels to Norway", k=5).results)
    finally:
        w.stop()
        applier.stop()
    assert not journal.read_after(store, 0, unapplied_only=True)


def test_unreadable_file_is_retried_then_left_skipped_with_its_reason(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    from context_store.state.skipped_inputs import open_skips

    journal.append(store, [journal.rescan_entry("company", "company", sources["company"], reason="start")])
    applier = WarmApplier(store, fake_embedder, interval_s=0.1, retry_delays=(0.05, 0.05, 0.05))
    applier.apply_once()
    broken = sources["company"] / "refunds.md"
    broken.write_bytes(b"# Refund policy\n\nCaf\xc3")  # a writer that never finishes its UTF-8
    journal.append(store, [journal.entry_for_path(store.settings, broken)])
    applier.start()
    try:
        assert wait_for(lambda: len([r for r in journal.read_after(store, 0) if r.event == "retry"]) == 3)
        time.sleep(0.5)
    finally:
        applier.stop()
    assert len([r for r in journal.read_after(store, 0) if r.event == "retry"]) == 3  # then it gives up
    with store.session() as s:
        (skip,) = [k for k in open_skips(s) if k.path == str(broken)]
        assert skip.reason == "invalid_utf8"
        doc = s.get(Document, "company/refunds.md")
        assert doc.current_version_id and doc.current_version_id == doc.indexed_version_id


def test_the_warm_path_follows_a_promotion_without_restart(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder, tmp_path: Path
) -> None:
    import json

    from context_store.measure.gate import run_gate

    golden = tmp_path / "golden.jsonl"
    golden.write_text(json.dumps({"id": "g1", "text": "refund window days delivery", "answerable": True,
                                  "expected_doc_ids": ["company/refunds.md"]}) + "\n")
    applier = WarmApplier(store, fake_embedder, embedder_for=lambda config: HashingEmbedder(name=config.model))
    journal.append(store, [journal.entry_for_path(store.settings, sources["company"] / "refunds.md")])
    applier.apply_once()
    changed = ContextStore.open(store.settings.home, **{
        "company_sources": [s.model_dump() for s in store.settings.company_sources],
        "user_sources": [s.model_dump() for s in store.settings.user_sources],
        "embedding": {"model": "hashing-follow-test"},
        "quality": {"golden_sets": [{"name": "mini", "path": str(golden)}], "ndcg_floor": 0.3, "recall_floor": 0.3, "mrr_floor": 0.3},
    })
    _, gate, decision = run_gate(changed, fake_embedder, HashingEmbedder(name="hashing-follow-test"))
    assert decision is not None, gate.reason if gate else None

    (sources["company"] / "shipping.md").write_text("# Shipping\n\nParcels to Norway take nine working days.\n")
    journal.append(store, [journal.entry_for_path(store.settings, sources["company"] / "shipping.md")])
    applier.apply_once()  # before: StoreError "restart it to write to the new index"
    assert not journal.read_after(store, 0, unapplied_only=True)
    assert applier.store.index.company_table_name == f"company_chunks__{decision.candidate_fingerprint}"
    assert applier.embedder.name == "hashing-follow-test"
    hits = retrieve(ContextStore.open(store.settings.home), applier.embedder, "parcels to Norway working days", k=1).results
    assert hits and hits[0].doc_id == "company/shipping.md"
