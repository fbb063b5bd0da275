"""The warm path: changes applied in a long-lived process the moment they are known, one pass at a time.

One mechanism for the two processes that keep a model loaded and index at once:

- the watcher's process (``freshcontext watch --apply``): ``start()`` runs a thread that
  applies the change journal as soon as rows arrive (the watcher ``wake``s it) and at least
  every ``interval_s``, with retries for files caught mid-write, LanceDB optimize kept off
  the path from write to retrievable, and lag timelines recorded after each apply;
- a serving process that received staff answers: ``submit(paths)`` versions and indexes
  those files (and only their documents) from the calling thread. Submissions arriving
  while a pass runs are coalesced into the next pass, which the thread already running
  passes takes; a burst of answers never starts one LanceDB writer per answer.

Every pass of either kind holds the same lock, follows a promotion of the serving index
first (new tables, new model), and is reported to ``on_apply``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from context_store._common import utcnow
from context_store.index.embed.factory import build_embedder
from context_store.index.embed.protocol import Embedder
from context_store.index.ingest import ApplyResult, apply_changes, apply_company_paths
from context_store.index.lag import record_fts_coverage, record_lags
from context_store.settings import EmbeddingConfig
from context_store.state import journal
from context_store.store.context_store import ContextStore
from context_store.store.models import ChangeEvent
from context_store.store.runs import STAGE_FTS, track_run
from context_store.store.serving import DeploymentWatch

__all__ = ["WarmApplier"]

log = logging.getLogger(__name__)


class _OptimizeLost(Exception):
    """LanceDB's optimize gave way to a concurrent writer; the next idle moment tries again."""


class WarmApplier:
    """Apply the journal in-process as soon as rows arrive (and at least every ``interval_s``),
    or the files a caller ``submit``s, at once; one pass at a time.

    Reads that fail for a transient reason (a partial write, a lock) are journaled again as
    ``retry`` rows after a back-off, up to ``max_retries`` times; after that the input stays
    skipped with its reason, and whatever version was stored keeps serving.

    When a promotion switches the serving index, the next apply writes to the new tables with
    the new model (``embedder_for`` loads it), instead of refusing until a restart.

    LanceDB's ``optimize`` (compaction, folding new rows into the full-text index) costs far
    more than a one-file commit, so it is kept off the path from write to retrievable: new
    rows are searchable before it runs. It runs once the journal has been quiet for
    ``optimize_idle_s``, after ``optimize_every`` uncovered commits at the latest, and on stop;
    each run is logged as an ``fts`` run and fills in the covered versions' timelines.

    ``backlog`` (the watcher's :meth:`SourceWatcher.backlog`): when woken, wait up to
    ``settle_s`` for a burst of file events to finish journaling, so the files of one
    many-file change go into one apply, cheapest first, instead of the first few journaled
    holding the rest back for a whole apply.

    ``applied_by`` stamps the journal rows this applier applies (``warm``; a serving process
    indexing its staff answers says ``staff-answer``).
    """

    def __init__(
        self,
        store: ContextStore,
        embedder: Embedder,
        *,
        interval_s: float = 1.0,
        max_retries: int = 3,
        retry_delays: tuple[float, ...] = (0.5, 1.0, 2.0),
        on_apply: Callable[[ApplyResult], None] | None = None,
        embedder_for: Callable[[EmbeddingConfig], Embedder] | None = None,
        optimize_idle_s: float = 1.0,
        optimize_every: int = 20,
        wave_chunks: int = 16,
        backlog: Callable[[], int] | None = None,
        settle_s: float = 0.5,
        applied_by: str = "warm",
    ) -> None:
        self.store = store
        self.embedder = embedder
        self.embedder_for = embedder_for or (lambda config: build_embedder(config, store.settings.home))
        # one one-row SELECT per apply: cheap beside the apply's own queries, and no stale window
        self._deployment = DeploymentWatch(store.engine, store.deployment.fingerprint, interval=0.0) if store.deployment else None
        self.interval_s = interval_s
        self.max_retries = max_retries
        self.retry_delays = retry_delays
        self.on_apply = on_apply
        self.cursor = 0
        self.applied = 0
        self.results: list[ApplyResult] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._retries: dict[str, tuple[int, float, ChangeEvent]] = {}
        self._thread: threading.Thread | None = None
        self._busy = threading.Lock()
        self.optimize_idle_s = optimize_idle_s
        self.optimize_every = optimize_every
        # small waves: in a many-file change each file is retrievable when its wave commits,
        # not when the last file is embedded (one LanceDB commit per wave; optimize folds them)
        self.wave_chunks = wave_chunks
        self.uncovered_commits = 0  # LanceDB commits not yet folded into the full-text index
        self._last_commit = 0.0
        self.optimizations: list[dict[str, Any]] = []
        self.backlog = backlog
        self.settle_s = settle_s
        self.applied_by = applied_by
        self._submitted: set[str] = set()  # paths handed to submit() and not yet taken by a pass
        self._in_pass: set[str] = set()  # the submitted paths the running pass took
        self._submit_lock = threading.Condition()  # a pass ending notifies wait_for
        self._draining = False  # a thread is running submitted passes

    def wake(self, *_: object) -> None:
        self._wake.set()

    def apply_once(self) -> ApplyResult:
        with self._busy:
            self._follow_promotion()
            self._journal_due_retries()
            # every unapplied row, not only those after a cursor: on PostgreSQL a lower id can
            # commit after a higher one, and a row some other path applied is skipped anyway
            result = apply_changes(
                self.store, self.embedder, cursor=0, applied_by=self.applied_by, optimize=False, wave_chunks=self.wave_chunks
            )
            self.cursor = result.cursor
            if result.applied_ids:
                self.applied += len(result.applied_ids)
                record_lags(
                    self.store,
                    doc_ids=result.company_index.indexed_ids if result.company_index else [],
                    user_ids=result.user_index.indexed_ids if result.user_index else [],
                )
                commits = result.company_index.lancedb_commits if result.company_index else 0
                if commits:
                    self.uncovered_commits += commits
                    self._last_commit = time.monotonic()
                    if self.uncovered_commits >= self.optimize_every:
                        self._optimize()
                self._schedule_retries(result)
                self._report(result)
            return result

    def submit(self, paths: Iterable[str | Path], *, background: bool = False) -> None:
        """Version and index these company files now, and only their documents; coalesced, one pass at a time.

        Safe from any thread. While a submitted pass runs, further paths join the next pass,
        which the thread running passes takes, and this call returns at once; otherwise the
        calling thread runs passes until nothing is left (``background``: a new thread does,
        and this call returns at once; ``wait_for`` says when the paths are done). A pass that
        fails is logged and its files are left to the journal (the sensors, the reconciliation
        or the next ingest apply them); later passes still run.
        """
        with self._submit_lock:
            self._submitted.update(str(p) for p in paths)
            if self._draining:
                return
            self._draining = True
        if background:
            threading.Thread(target=self._drain, name="warm-submitted", daemon=True).start()
        else:
            self._drain()

    def wait_for(self, paths: Iterable[str | Path], timeout: float) -> bool:
        """Block until no pass is still to take or taking these submitted paths; False after ``timeout``."""
        wanted = {str(p) for p in paths}
        with self._submit_lock:
            return self._submit_lock.wait_for(lambda: not wanted & (self._submitted | self._in_pass), timeout)

    def _drain(self) -> None:
        try:
            while True:
                with self._submit_lock:
                    batch, self._submitted = sorted(self._submitted), set()
                    self._in_pass = set(batch)
                    if not batch:
                        self._draining = False
                        self._submit_lock.notify_all()
                        return
                try:
                    self.apply_paths(batch)
                except Exception:  # the embedder may be down; the files are journaled, nothing is lost
                    log.exception("could not index %s yet; the sensors or the next ingest will", ", ".join(batch))
                finally:
                    with self._submit_lock:
                        self._in_pass = set()
                        self._submit_lock.notify_all()
        except BaseException:
            with self._submit_lock:
                self._draining = False  # an interrupted drain must not leave later submissions waiting forever
                self._submit_lock.notify_all()
            raise

    def apply_paths(self, paths: Iterable[str | Path]) -> ApplyResult:
        """One pass over these company files (``index.ingest.apply_company_paths``), reported to ``on_apply``.

        Compaction and full-text folding of its rows are left to the ingest or the journal
        passes' optimize, as a small writer beside them should.
        """
        with self._busy:
            self._follow_promotion()
            result = apply_company_paths(self.store, self.embedder, list(paths), applied_by=self.applied_by)
            self._report(result)
            return result

    def _report(self, result: ApplyResult) -> None:
        self.results.append(result)
        del self.results[:-100]
        if self.on_apply:
            try:
                self.on_apply(result)
            except Exception as exc:  # reporting must never stop applying
                log.warning("could not report the update: %s", exc)

    def settle(self) -> None:
        """Wait (up to ``settle_s``) until the watcher has journaled every path it saw change."""
        if self.backlog is None:
            return
        deadline = time.monotonic() + self.settle_s
        while self.backlog() and not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            # each journal flush wakes us; a burst's end does not, so look again soon after it may have come
            self._wake.wait(min(left, 0.002))
            self._wake.clear()

    def optimize(self) -> bool:
        """Fold the uncovered commits into the full-text index now; False if there were none or it lost a race."""
        with self._busy:
            return self._optimize()

    def _optimize(self) -> bool:
        if not self.uncovered_commits:
            return False
        started = utcnow()
        began = time.perf_counter()
        try:
            with track_run(self.store, "company", STAGE_FTS, "watch") as stats:
                stats["commits_covered"] = self.uncovered_commits
                if not self.store.index.optimize():
                    # logged as failed: its commits are not covered, and the timelines must not say so
                    raise _OptimizeLost()
                stats["seconds"] = round(time.perf_counter() - began, 3)
        except _OptimizeLost:
            self._last_commit = time.monotonic()  # again after the next quiet spell, not in a tight loop
            return False
        except Exception:
            self._last_commit = time.monotonic()
            raise
        covered = record_fts_coverage(self.store, started=started, finished=utcnow())
        self.optimizations.append({"seconds": time.perf_counter() - began, "commits": self.uncovered_commits, "versions": covered})
        del self.optimizations[:-100]
        self.uncovered_commits = 0
        return True

    def idle_for(self) -> float:
        return time.monotonic() - self._last_commit

    def _follow_promotion(self) -> None:
        if self._deployment is None or self._deployment.changed() is None:
            return
        try:
            store = ContextStore(self.store.configured)  # re-reads the serving deployment
            same_model = store.settings.embedding.model == self.store.settings.embedding.model
            embedder = self.embedder if same_model else self.embedder_for(store.settings.embedding)
        except Exception as exc:  # the old tables are retired: applying fails loudly until this works
            log.error("index %s was promoted but could not be opened here: %s: %s", self._deployment.fingerprint, type(exc).__name__, exc)
            self._deployment.retry_after(30.0)
            return
        log.warning("warm path now writes to index %s (model %s) instead of %s", store.deployment.fingerprint,
                    store.settings.embedding.model, self._deployment.fingerprint)
        self.store, self.embedder = store, embedder
        self._deployment.acknowledge(store.deployment.fingerprint)

    def _schedule_retries(self, result: ApplyResult) -> None:
        failed = {row.path for row in result.retry}
        for row in result.retry:
            attempt = self._retries.get(row.path, (0, 0.0, row))[0] + 1
            if attempt > self.max_retries:
                log.warning("%s still unreadable after %d retries; left skipped with its reason", row.path, self.max_retries)
                self._retries.pop(row.path, None)
                continue
            delay = self.retry_delays[min(attempt - 1, len(self.retry_delays) - 1)]
            self._retries[row.path] = (attempt, time.monotonic() + delay, row)
        for path in [p for p, (_, at, _) in self._retries.items() if p not in failed and at == float("inf")]:
            self._retries.pop(path, None)  # the retry read cleanly

    def _journal_due_retries(self) -> None:
        now = time.monotonic()
        due = [(path, attempt, row) for path, (attempt, at, row) in self._retries.items() if at <= now]
        if due:
            journal.append(self.store, [journal.retry_entry(row, attempt) for _, attempt, row in due])
            for path, attempt, row in due:
                self._retries[path] = (attempt, float("inf"), row)  # waiting for the outcome of the retry

    def next_retry_in(self) -> float | None:
        pending = [at - time.monotonic() for _, at, _ in self._retries.values() if at != float("inf")]
        return max(0.0, min(pending)) if pending else None

    def _loop(self) -> None:
        while not self._stop.is_set():
            wait = self.interval_s
            retry = self.next_retry_in()
            if retry is not None:
                wait = min(wait, retry)
            if self.uncovered_commits:
                wait = min(wait, max(0.0, self.optimize_idle_s - self.idle_for()))
            self._wake.wait(wait)
            self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.settle()
                result = self.apply_once()
                if not result.applied_ids and self.uncovered_commits and self.idle_for() >= self.optimize_idle_s:
                    self.optimize()
            except Exception:  # keep serving: the rows stay unapplied and are tried again
                log.exception("applying the change journal failed; will retry")
                self._stop.wait(1.0)

    def start(self) -> "WarmApplier":
        _ = self.store.engine  # see SourceWatcher.start
        self._thread = threading.Thread(target=self._loop, name="warm-apply", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        try:
            self.optimize()  # leave the tables compacted and fully covered
        except Exception:
            log.exception("could not optimize LanceDB on stop; the compaction schedule will")
