"""Replay a history into watched folders through one or more drivers, and report what each made of it.

A *driver* (the warm watcher, or the Dagster sensor path) brings one store up to date after
the replay wrote a commit's files into its folder; drivers live outside the core (they need
watchdog and Dagster). ``run_replay`` bootstraps every driver to a start commit, then, per
commit: writes it, waits until each measured driver's store serves it (lag), probes it
(stale hits, misses), and times the embedding floor; at the end it compares the drivers'
final states with each other and with the history.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from sqlmodel import col, func, select

from context_store._common import sha256, utcnow
from context_store.index.embed.protocol import Embedder
from context_store.measure.replay.floor import EmbedFloor
from context_store.measure.replay.history import Commit, FileWrite, History, ReplayState, chunk_hashes, chunk_texts, iter_commits
from context_store.measure.replay.probes import probe, probes_for, wait_until_current
from context_store.measure.replay.stats import SMALL_COMMIT, DriverStats
from context_store.settings import Settings
from context_store.state.documents import doc_id_for
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, DocumentVersion, EmbeddingCacheEntry

__all__ = ["ReplayDriver", "copy_embeddings", "embedded_since", "run_replay", "served_state"]


class ReplayDriver(Protocol):
    """Brings one store up to date after the replay wrote files into ``root``."""

    name: str
    root: Path
    store: ContextStore

    def bootstrap(self) -> None:
        """Ingest the folder as it stands before the measured commits (not measured)."""
        ...

    def active(self, index: int) -> bool:
        """Whether commit ``index`` is measured on this driver (else only written)."""
        ...

    def after_write(self, writes: list[FileWrite], started: float) -> None:
        """Called once a commit's files are on disk (e.g. to run a sensor tick); may block."""
        ...

    def quiesce(self) -> None:
        """Wait for work ``after_write`` left running, once the commit is measured and probed,
        so the next driver is measured on a machine this one no longer loads."""
        ...

    def finish(self) -> None:
        """Apply whatever is still pending, so final states can be compared."""
        ...



def embedded_since(store: ContextStore, since: datetime) -> int:
    """Chunks (and facts) embedded since ``since``: each embedding is cached exactly once."""
    with store.session() as session:
        return int(
            session.exec(select(func.count()).select_from(EmbeddingCacheEntry).where(col(EmbeddingCacheEntry.created_at) >= since)).one()
        )


def copy_embeddings(source: ContextStore, target: ContextStore) -> int:
    """Seed ``target``'s embedding cache with ``source``'s (keyed by chunk hash and model)."""
    with source.session() as src:
        entries = list(src.exec(select(EmbeddingCacheEntry)).all())
    with target.session() as dst:
        known = set(dst.exec(select(EmbeddingCacheEntry.chunk_hash, EmbeddingCacheEntry.model)).all())
        fresh = [e for e in entries if (e.chunk_hash, e.model) not in known]
        dst.add_all(
            EmbeddingCacheEntry(chunk_hash=e.chunk_hash, model=e.model, dim=e.dim, vector=e.vector, created_at=e.created_at)
            for e in fresh
        )
    return len(fresh)


def served_state(store: ContextStore) -> tuple[dict[str, str], set[str]]:
    """(doc_id -> current content hash, chunk ids in LanceDB): what two stores must agree on."""
    with store.session() as session:
        current = dict(
            session.exec(
                select(Document.doc_id, DocumentVersion.content_hash).join(
                    DocumentVersion, col(DocumentVersion.version_id) == col(Document.current_version_id)
                )
            ).all()
        )
    return current, store.index.ids(store.index.company_table_name, "chunk_id")


@dataclass
class _Replay:
    """One replay in progress: the ground truth, the drivers and what has been counted so far."""

    history: History
    drivers: list[ReplayDriver]
    embedder: Embedder
    settings: Settings
    source_name: str
    probes_per_commit: int
    k: int
    timeout_s: float
    state: ReplayState
    stats: dict[str, DriverStats]
    floor: EmbedFloor | None
    seen_hashes: set[str] = field(default_factory=set)  # chunk hashes some earlier text already had
    chunks_changed: int = 0
    files_changed: int = 0
    replayed: int = 0

    def ignored(self) -> set[str]:
        """Documents whose newest file the store rightly skips (it keeps serving the last good version)."""
        return {doc_id_for(self.source_name, rel) for rel in self.state.skipped_paths}


def _bootstrap(replay: _Replay, start: int) -> None:
    """Apply the first ``start`` commits unmeasured, and bring every driver to that state."""
    state, settings = replay.state, replay.settings
    for _, commit in iter_commits(replay.history, 0, start):
        state.step(commit)
    for rel, text in state.files.items():
        if rel not in state.skipped_paths:
            replay.seen_hashes |= chunk_hashes(settings, doc_id_for(replay.source_name, rel), rel, text)
    for i, driver in enumerate(replay.drivers):
        state.write_all(driver.root)
        if i:  # same texts, same model: the first bootstrap's embeddings serve the others
            copy_embeddings(replay.drivers[0].store, driver.store)
        driver.bootstrap()


def _new_texts(replay: _Replay, writes: list[FileWrite]) -> dict[str, dict[str, str]]:
    """Per document whose lag is measured (deletions too): the chunk texts no earlier text had; counts them as seen."""
    new_texts: dict[str, dict[str, str]] = {}
    for w in writes:
        if w.text is None or w.indexable:
            texts = chunk_texts(replay.settings, w.doc_id, w.rel_path, w.text) if w.text is not None else {}
            new_texts[w.doc_id] = {h: t for h, t in texts.items() if h not in replay.seen_hashes}
    new_hashes = {h for texts in new_texts.values() for h in texts}
    replay.chunks_changed += len(new_hashes)
    replay.seen_hashes |= new_hashes
    return new_texts


@dataclass(frozen=True)
class _Expected:
    """What every store must serve once a commit is applied (computed before any file is written, off every lag)."""

    changed: dict[str, str | None]  # doc_id -> content hash of the commit's changed documents (None: deleted)
    truth: dict[str, str | None]  # doc_id -> content hash of every live document
    ignore: set[str]


def _measure(replay: _Replay, driver: ReplayDriver, commit: Commit, writes: list[FileWrite], started: float, want: _Expected) -> None:
    """Wait until ``driver``'s store serves the commit (lags), then probe it (stale hits, misses)."""
    expected, truth, ignore = want.changed, want.truth, want.ignore
    st = replay.stats[driver.name]
    st.commits += 1
    driver.after_write(writes, started)
    lags = wait_until_current(driver.store, expected, started=started, timeout=replay.timeout_s)
    st.lags.extend(lags.values())
    if lags:
        st.commit_lags.append(max(lags.values()))
    if len(writes) <= SMALL_COMMIT:
        st.small_commit_lags.extend(lags.values())
    st.timeouts += len(expected) - len(lags)
    for query, doc_id, kind in probes_for(writes, replay.probes_per_commit):
        outcome = probe(driver.store, replay.embedder, query, doc_id=doc_id, kind=kind, truth=truth, ignore=ignore, k=replay.k)
        st.probes += 1
        if outcome.stale:
            st.stale_hits += len(outcome.stale)
            st.stale_examples.append({"commit": commit.sha[:10], "query": query[:120], "stale": outcome.stale[:3]})
        if outcome.found is False:
            st.misses += 1
            st.miss_examples.append({"commit": commit.sha[:10], "doc_id": doc_id, "query": query[:120]})
    driver.quiesce()


def _replay_commit(replay: _Replay, index: int, commit: Commit, floor_for: str | None) -> None:
    writes = replay.state.step(commit)
    replay.replayed += 1
    replay.files_changed += len(writes)
    new_texts = _new_texts(replay, writes)
    want = _Expected(
        {w.doc_id: (sha256(w.text.encode("utf-8")) if w.text is not None else None) for w in writes if w.text is None or w.indexable},
        replay.state.truth(), replay.ignored(),
    )
    measured_on: set[str] = set()
    for driver in replay.drivers:
        measured = driver.active(index)
        started = time.time()
        ReplayState.write(driver.root, writes)
        if measured:
            measured_on.add(driver.name)
            _measure(replay, driver, commit, writes, started, want)
    if replay.floor is not None and floor_for in measured_on:
        replay.floor.measure(replay.embedder, new_texts)


def _final_report(replay: _Replay, replay_started: datetime, start: int, bootstrap_s: float) -> dict[str, Any]:
    drivers = replay.drivers
    for driver in drivers:
        driver.finish()
    for driver in drivers:
        replay.stats[driver.name].chunks_embedded = embedded_since(driver.store, replay_started)
    identical = None
    if len(drivers) > 1:
        states = [served_state(d.store) for d in drivers]
        identical = all(s == states[0] for s in states[1:])
    ignore = replay.ignored()
    served = {d: h for d, h in served_state(drivers[0].store)[0].items() if d not in ignore}
    return {
        "history": str(replay.history.directory),
        "commits": replay.replayed,
        "bootstrap_commits": start,
        "bootstrap_seconds": round(bootstrap_s, 2),
        "files_changed": replay.files_changed,
        "missing_blobs": replay.state.missing_blobs,
        "chunks_changed": replay.chunks_changed,
        "final_state_matches_history": served == replay.state.truth(),
        "drivers_identical": identical,
        "drivers": {n: s.summary() for n, s in replay.stats.items()},
        "embed_floor": replay.floor.summary() if replay.floor is not None else None,
    }


def run_replay(
    history: History,
    drivers: list[ReplayDriver],
    *,
    embedder: Embedder,
    settings: Settings,
    source_name: str,
    start: int,
    commits: int | None,
    probes_per_commit: int = 4,
    k: int = 10,
    timeout_s: float = 120.0,
    progress: Callable[[int, int, dict[str, Any]], None] | None = None,
    floor_for: str | None = None,
) -> dict[str, Any]:
    """Bootstrap every driver to commit ``start``, then replay ``commits`` commits one by one.

    ``floor_for``: the driver (by name) whose measured commits also get an :class:`EmbedFloor`,
    timed with ``embedder`` once every driver has measured the commit and quiesced, so it never
    overlaps a measured lag. ``embedder`` must then be the object that driver embeds with.
    """
    began = time.perf_counter()
    replay = _Replay(
        history, drivers, embedder, settings, source_name, probes_per_commit, k, timeout_s,
        state=ReplayState(history, source_name, settings), stats={d.name: DriverStats(d.name) for d in drivers},
        floor=EmbedFloor() if floor_for is not None else None,
    )
    _bootstrap(replay, start)
    bootstrap_s = time.perf_counter() - began
    replay_started = utcnow()
    end = len(history) if commits is None else min(len(history), start + commits)
    for index, commit in iter_commits(history, start, commits):
        _replay_commit(replay, index, commit, floor_for)
        if progress:
            progress(index - start + 1, end - start, {n: s.summary() for n, s in replay.stats.items()})
    report = _final_report(replay, replay_started, start, bootstrap_s)
    report["seconds"] = round(time.perf_counter() - began, 2)
    return report
