"""The one warm path: submitted files are applied in coalesced passes, one pass at a time, none lost."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from context_store.index import warm
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ApplyResult, ingest
from context_store.index.warm import WarmApplier
from context_store.learn.answers import answer_applier, store_answer, submit_answers
from context_store.retrieve.retriever import retrieve
from context_store.route.decision import Reason
from context_store.route.questions import get_question, route_question
from context_store.state import journal
from context_store.store.context_store import ContextStore
from context_store.store.models import ChangeEvent, Document
from tests.conftest import open_with_staff_answers


class _Passes:
    """Wraps ``apply_company_paths``: counts passes, the most running at once, and the paths each took."""

    def __init__(self, delay: float, fail_first: bool = False) -> None:
        self.real = warm.apply_company_paths
        self.delay, self.fail_first = delay, fail_first
        self.batches: list[list[str]] = []
        self.active = self.peak = 0
        self.guard = threading.Lock()

    def __call__(self, store: ContextStore, embedder: Any, paths: list[str], **kwargs: Any) -> ApplyResult:
        with self.guard:
            self.active += 1
            self.peak = max(self.peak, self.active)
            self.batches.append(list(paths))
            first = len(self.batches) == 1
        try:
            time.sleep(self.delay)  # long enough for the rest of a burst to arrive meanwhile
            if first and self.fail_first:
                raise RuntimeError("embedding service unavailable")
            return self.real(store, embedder, paths, **kwargs)
        finally:
            with self.guard:
                self.active -= 1


def _write(root: Path, n: int) -> list[Path]:
    paths = []
    for i in range(n):
        path = root / f"note-{i}.md"
        path.write_text(f"# Note {i}\n\nParcels to country {i} take {i + 2} working days.\n")
        paths.append(path)
    return paths


def _indexed(store: ContextStore, doc_ids: list[str]) -> list[str]:
    with store.session() as s:
        docs = [s.get(Document, d) for d in doc_ids]
    return [d.doc_id for d in docs if d is not None and d.current_version_id and d.indexed_version_id == d.current_version_id]


def test_concurrent_submissions_run_one_pass_at_a_time_and_none_is_lost(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(store, fake_embedder)
    passes = _Passes(delay=0.2)
    monkeypatch.setattr(warm, "apply_company_paths", passes)
    reported: list[ApplyResult] = []
    applier = WarmApplier(store, fake_embedder, on_apply=reported.append)
    paths = _write(sources["company"], 6)
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda p: applier.submit([p]), paths))
    assert passes.peak == 1 and len(passes.batches) < 6  # later submissions were taken by a running pass
    assert sorted(p for batch in passes.batches for p in batch) == sorted(str(p) for p in paths)
    assert len(reported) == len(passes.batches)
    doc_ids = [f"company/{p.name}" for p in paths]
    assert _indexed(store, doc_ids) == doc_ids


def test_a_failed_pass_is_logged_and_later_submissions_still_run(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingest(store, fake_embedder)
    passes = _Passes(delay=0.0, fail_first=True)
    monkeypatch.setattr(warm, "apply_company_paths", passes)
    applier = WarmApplier(store, fake_embedder)
    first, second = _write(sources["company"], 2)
    journal.append(store, [journal.entry_for_path(store.settings, first)])
    applier.submit([first])  # fails: the file stays journaled, unapplied, for the sensors or the next ingest
    assert [r.path for r in journal.read_after(store, 0, unapplied_only=True)] == [str(first)]
    applier.submit([second])
    assert passes.batches == [[str(first)], [str(second)]] and _indexed(store, ["company/note-1.md"]) == ["company/note-1.md"]


def test_a_submitted_pass_indexes_only_its_own_documents_and_marks_their_rows(
    store: ContextStore, sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    ingest(store, fake_embedder)
    mine, theirs = _write(sources["company"], 2)
    journal.append(store, [journal.entry_for_path(store.settings, p) for p in (mine, theirs)])
    journal.append(store, [journal.rescan_entry("user", "users", sources["users"], reason="start")])
    applier = WarmApplier(store, fake_embedder, applied_by="staff-answer")
    applier.submit([mine])
    assert _indexed(store, ["company/note-0.md", "company/note-1.md"]) == ["company/note-0.md"]
    with store.session() as s:
        rows = {(r.path, r.applied_by) for r in s.exec(select(ChangeEvent)).all()}
    assert (str(mine), "staff-answer") in rows and (str(theirs), None) in rows and (str(sources["users"]), None) in rows


def test_the_answer_applier_stamps_answers_retrievable(sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    store = open_with_staff_answers(sources)
    ingest(store, fake_embedder)
    text = "Do you ship lamps to Iceland?"
    reasons = [Reason("low_confidence", "test", 0.1)]
    routed = route_question(store, retrieve(store, fake_embedder, text), reasons, vector=fake_embedder.encode([text])[0],
                            model=fake_embedder.name, confidence=0.1)
    answer = store_answer(store, routed.question_id, author="tom", text="Yes, to Iceland with DHL Express in 5 days.")
    applier = answer_applier(store, fake_embedder)
    submit_answers(applier, [answer.answer_id])  # writes the missing file, then one pass
    assert get_question(store, routed.question_id)["answer"]["retrievable_at"] is not None
    submit_answers(applier, ["a-unknown"])  # never raises: logged, left to the next ingest
