"""What one API process holds: the serving index (tables, dense snapshot, query encoder, calibrator) and the reranker.

Everything that depends on which index serves is one ``Serving`` object, and a request
takes one of them at its start (``ServiceState.serving()``) and uses it to the end, so a
query vector from one model is never searched against vectors of another. When a
promotion switches the serving deployment, ``serving()`` notices within
``retrieval.deployment_check_seconds`` (``context_store.store.serving.DeploymentWatch``); a
background thread then opens the new tables, loads the new model, warms both, and swaps
the reference. Until that has finished the old index keeps serving, so a request never
waits for a model to load. A switch that fails (the model is not installed in this
process, say) is logged, shown by ``/readyz``, and tried again later.

The calibrator (``<home>/calibrator.json``, with the threshold stored beside it) is reloaded
when the file changes: ``serving()`` stats it at most once per
``retrieval.calibrator_check_seconds`` (``CalibratorWatch``; between looks a request pays one
clock read), and a new one is swapped in as a new ``Responder``, so the outcome calibration's
promotion reaches a running API without a restart. A damaged file is logged and the
calibrator in use stays.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from context_store.errors import ConfigError
from context_store.index import Embedder, build_query_encoder, resolve_device
from context_store.retrieve import DenseIndex, RetrievalResult, Retriever, load_reranker
from context_store.route import CALIBRATOR_FILE, Calibrator, Responder, Trigger, load_calibrator
from context_store.settings import EmbeddingConfig, RetrievalConfig
from context_store.store import ContextStore, DeploymentWatch, VectorIndex

__all__ = ["CalibratorWatch", "EncoderFactory", "ServiceState", "Serving"]

log = logging.getLogger(__name__)

EncoderFactory = Callable[[EmbeddingConfig], Embedder]
RETRY_FAILED_SWITCH_S = 30.0


class Serving:
    """One index deployment as served: its store (tables), dense snapshot, query encoder and calibrator."""

    def __init__(
        self,
        store: ContextStore,
        *,
        config: RetrievalConfig,
        triggers: list[Trigger],
        encoder: Callable[[], Embedder],
        calibrator: Calibrator | None,
        reranker: Any,
    ) -> None:
        self.store = store
        self.config = config
        self.triggers = triggers
        self.calibrator = calibrator
        self.fingerprint: str | None = store.deployment.fingerprint if store.deployment is not None else None
        # One reader view of this deployment's tables: handles opened once, LanceDB looks for
        # newer versions at most every refresh interval.
        self.index = store.index.reader(config.refresh_interval_seconds)
        self.dense = DenseIndex.from_config(self.index, config, device=resolve_device(store.settings.embedding.device))
        self._encoder = encoder
        self._embedder: Embedder | None = None
        self._reranker = reranker
        self._retriever: Retriever | None = None
        self._responder: Responder | None = None
        self._lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.store.settings.embedding.model

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = self._encoder()
            return self._embedder

    @property
    def model_loaded(self) -> bool:
        return self._embedder is not None

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self._retriever = Retriever(
                self.store, self.embedder, config=self.config, dense=self.dense, reranker=self._reranker, index=self.index
            )
        return self._retriever

    @property
    def responder(self) -> Responder:
        """What ``respond()`` answers with on this deployment: its retriever, calibrator and triggers."""
        if self._responder is None:
            self._responder = Responder(self.store, self.retriever, calibrator=self.calibrator, triggers=self.triggers)
        return self._responder

    def confidence(self, result: RetrievalResult) -> tuple[float, str]:
        return self.responder.confidence(result)

    def use_calibrator(self, calibrator: Calibrator | None) -> None:
        """Decide with ``calibrator`` from the next request on; one holding the old responder finishes with it."""
        self.calibrator = calibrator
        self._responder = None

    def warm_up(self) -> dict[str, Any]:
        self.embedder.encode(["warm up"])
        snap = self.dense.snapshot()
        return {"rows": snap.size, "version": snap.version}

    def describe(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "model": self.model, "company_table": self.store.index.company_table_name,
                "user_table": self.store.index.user_table_name}


class CalibratorWatch:
    """Rate-limited look at the calibrator file: one ``stat`` at most every ``interval`` seconds, by one thread."""

    def __init__(self, path: Path, *, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.interval = interval
        self.checks = 0
        self._clock = clock
        self._stamp = self._read_stamp()
        self._due = clock() + interval
        self._lock = threading.Lock()

    def _read_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None  # no calibrator (yet): a file that appears later is a change
        return st.st_mtime_ns, st.st_size

    def due(self) -> bool:
        """Whether the next ``changed()`` would look (reads the clock only)."""
        return self._clock() >= self._due

    def changed(self) -> bool:
        """True once after the file was written, replaced or removed since the last look."""
        if self._clock() < self._due or not self._lock.acquire(blocking=False):
            return False
        try:
            if self._clock() < self._due:
                return False
            self._due = self._clock() + self.interval
            self.checks += 1
            stamp = self._read_stamp()
            if stamp == self._stamp:
                return False
            self._stamp = stamp
            return True
        finally:
            self._lock.release()


class ServiceState:
    """The API's state; ``embedder`` fixes the query encoder (tests), ``encoder_for`` builds one per model."""

    def __init__(
        self,
        store: ContextStore,
        *,
        embedder: Embedder | None = None,
        encoder_for: EncoderFactory | None = None,
        triggers: Sequence[Trigger] = (),
        calibrator_path: Path | None = None,
    ) -> None:
        self.config = store.settings.retrieval
        self.triggers = list(triggers)
        self._calibrator_path = calibrator_path or store.settings.home / CALIBRATOR_FILE
        self._fixed = embedder
        self._encoder_for = encoder_for
        self.reranker, self.reranker_status = load_reranker(self.config.reranker)
        # stamped before the first load: a file written in between is seen as a change, never missed
        self._calibrator_watch = CalibratorWatch(self._calibrator_path, interval=self.config.calibrator_check_seconds)
        self._serving = self._open(store, previous=None)
        self._watch = (
            DeploymentWatch(store.engine, self._serving.fingerprint, interval=self.config.deployment_check_seconds)
            if self._serving.fingerprint is not None else None  # an explicit index (a candidate) is never switched
        )
        self._switch_lock = threading.Lock()
        self._switching: threading.Thread | None = None
        self.switches = 0
        self.switch_error: str | None = None
        self.calibrator_reloads = 0
        self.calibrator_error: str | None = None
        self.last_switch_s: float | None = None  # noticing excluded: opening, loading and warming the new index

    # -- the serving deployment ----------------------------------------------------------

    def serving(self) -> Serving:
        """What a request uses from its start to its end; looks for a promotion at most once per interval."""
        if self._watch is not None:
            promoted = self._watch.changed()
            if promoted is not None:
                self._begin_switch(promoted)
        if self._calibrator_watch.changed():
            self._reload_calibrator()
        return self._serving

    def settled(self) -> Serving | None:
        """What ``serving()`` returns, when it would look at nothing now (no promotion or calibrator
        look due: no SQL, no file, only the clock read), else ``None``: then call ``serving()``."""
        if (self._watch is not None and self._watch.due()) or self._calibrator_watch.due():
            return None
        return self._serving

    def _reload_calibrator(self) -> None:
        serving = self._serving
        try:
            calibrator = self._load_calibrator(serving.model)
        except ConfigError as exc:  # a half-written or foreign file: keep deciding with the one in use
            self.calibrator_error = str(exc)
            log.error("calibrator not reloaded, the one in use stays: %s", exc)
            return
        serving.use_calibrator(calibrator)
        self.calibrator_reloads += 1
        self.calibrator_error = None
        log.warning("calibrator reloaded from %s (threshold %s)", self._calibrator_path,
                    "from settings" if calibrator is None or calibrator.threshold is None else f"{calibrator.threshold:.3f}")

    def _load_calibrator(self, model: str) -> Calibrator | None:
        calibrator = load_calibrator(self._calibrator_path)
        if calibrator is not None and calibrator.model and calibrator.model != model:
            log.warning("calibrator was fitted for model %s, not %s; using the conservative default", calibrator.model, model)
            return None
        return calibrator

    def _begin_switch(self, fingerprint: str) -> None:
        with self._switch_lock:
            if self._switching is not None and self._switching.is_alive():
                return
            log.info("index %s was promoted; loading it beside %s", fingerprint, self._serving.fingerprint)
            self._switching = threading.Thread(target=self._switch, name=f"switch-to-{fingerprint}", daemon=True)
            self._switching.start()

    def _switch(self) -> None:
        started = time.perf_counter()
        old = self._serving
        try:
            new = self._open(ContextStore(old.store.configured), previous=old)  # re-reads the serving row
            new.warm_up()  # the first request on the new index must not pay for loading it
        except Exception as exc:  # keep serving the old index; say why where operators look
            self.switch_error = f"{exc.__class__.__name__}: {exc}"
            log.error("could not switch to the promoted index; %s keeps serving: %s", old.fingerprint, self.switch_error)
            if self._watch is not None:
                self._watch.retry_after(RETRY_FAILED_SWITCH_S)
            return
        self._serving = new  # one reference swap: a request holds the old or the new, never parts of both
        if self._watch is not None and new.fingerprint is not None:
            self._watch.acknowledge(new.fingerprint)
        self.switches += 1
        self.switch_error = None
        self.last_switch_s = round(time.perf_counter() - started, 3)
        log.warning(
            "now serving index %s (model %s, tables %s, %s) instead of %s (model %s); switched without restart in %.2fs",
            new.fingerprint, new.model, new.store.index.company_table_name, new.store.index.user_table_name,
            old.fingerprint, old.model, self.last_switch_s,
        )

    def wait_for_switch(self, timeout: float | None = None) -> bool:
        """Block until a switch in progress has finished (tests, readiness); ``True`` when none is running."""
        thread = self._switching
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _open(self, store: ContextStore, previous: Serving | None) -> Serving:
        config = store.settings.embedding
        previous_model = previous.model if previous is not None else None
        # Same model, new chunker: the loaded encoder (and its query cache) stays valid. Only the
        # encoder is kept, never ``previous`` itself, so the old dense snapshot can be freed.
        reuse = previous.embedder if previous is not None and previous.model_loaded and previous_model == config.model else None

        def encoder() -> Embedder:
            return reuse if reuse is not None else self._encoder(store, config, previous_model)

        calibrator = self._load_calibrator(config.model)
        return Serving(store, config=self.config, triggers=self.triggers, encoder=encoder, calibrator=calibrator, reranker=self.reranker)

    def _encoder(self, store: ContextStore, config: EmbeddingConfig, previous_model: str | None) -> Embedder:
        if self._encoder_for is not None:
            return self._encoder_for(config)
        if self._fixed is not None:
            if previous_model is not None and previous_model != config.model:
                raise ConfigError(f"this process was given a fixed query encoder ({self._fixed.name}); it cannot encode "
                                  f"for the promoted model {config.model}: restart it")
            return self._fixed
        return build_query_encoder(config, self.config.query_encoder, store.settings.home, cache_size=self.config.query_cache_size)

    def status(self) -> dict[str, Any]:
        """What serves, and whether a switch is in progress or failed (``/readyz``)."""
        switching = self._switching is not None and self._switching.is_alive()
        return {**self._serving.describe(), "switches": self.switches, "switching": switching, "switch_error": self.switch_error,
                "last_switch_s": self.last_switch_s, "calibrator_reloads": self.calibrator_reloads,
                "calibrator_error": self.calibrator_error}

    # -- the current deployment's parts (readiness, staff routes, benches) ----------------

    @property
    def store(self) -> ContextStore:
        return self._serving.store

    @property
    def index(self) -> VectorIndex:
        return self._serving.index

    @property
    def dense(self) -> DenseIndex:
        return self._serving.dense

    @property
    def calibrator(self) -> Calibrator | None:
        return self._serving.calibrator

    @property
    def embedder(self) -> Embedder:
        return self._serving.embedder

    @property
    def model_loaded(self) -> bool:
        return self._serving.model_loaded

    @property
    def retriever(self) -> Retriever:
        return self.serving().retriever

    def confidence(self, result: RetrievalResult) -> tuple[float, str]:
        return self._serving.confidence(result)

    def warm_up(self) -> dict[str, Any]:
        """Load the model and the dense snapshot before the first request (startup, /readyz)."""
        return self.serving().warm_up()
