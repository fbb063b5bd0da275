"""What one API process holds: the store, the query encoder, the dense snapshot, the calibrator."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from context_store.confidence import CALIBRATOR_FILE, Calibrator, default_confidence, load_calibrator
from context_store.dense_index import DenseIndex
from context_store.decision import Trigger
from context_store.embedding import Embedder
from context_store.query_encoder import build_query_encoder
from context_store.reranker import load_reranker
from context_store.retrieval import RetrievalResult, Retriever
from context_store.store import ContextStore

__all__ = ["ServiceState"]

log = logging.getLogger(__name__)


class ServiceState:
    def __init__(
        self,
        store: ContextStore,
        *,
        embedder: Embedder | None = None,
        triggers: Sequence[Trigger] = (),
        calibrator_path: Path | None = None,
    ) -> None:
        self.store = store
        self.config = store.settings.retrieval
        self.triggers = list(triggers)
        self._embedder = embedder
        self._lock = threading.Lock()
        # One reader view of the tables for the whole process: handles opened once, LanceDB looks
        # for newer versions at most every refresh interval.
        self.index = store.index.reader(self.config.refresh_interval_seconds)
        self.dense = DenseIndex.from_config(self.index, self.config)
        self.calibrator: Calibrator | None = load_calibrator(calibrator_path or store.settings.home / CALIBRATOR_FILE)
        if self.calibrator is not None and self.calibrator.model and self.calibrator.model != store.settings.embedding.model:
            log.warning("calibrator was fitted for model %s, not %s; using the conservative default",
                        self.calibrator.model, store.settings.embedding.model)
            self.calibrator = None
        self.reranker, self.reranker_status = load_reranker(self.config.reranker)
        self._retriever: Retriever | None = None

    @property
    def embedder(self) -> Embedder:
        with self._lock:
            if self._embedder is None:
                self._embedder = build_query_encoder(
                    self.store.settings.embedding, self.config.query_encoder, self.store.settings.home,
                    cache_size=self.config.query_cache_size,
                )
            return self._embedder

    @property
    def model_loaded(self) -> bool:
        return self._embedder is not None

    @property
    def retriever(self) -> Retriever:
        if self._retriever is None:
            self._retriever = Retriever(
                self.store, self.embedder, config=self.config, dense=self.dense, reranker=self.reranker, index=self.index
            )
        return self._retriever

    def confidence(self, result: RetrievalResult) -> tuple[float, str]:
        if not result.results:
            return 0.0, "no results"
        if self.calibrator is not None:
            return self.calibrator.predict(result.features), f"calibrator ({Path(self.calibrator.fitted_on).name or 'unnamed'})"
        return default_confidence(result.features), "conservative default"

    def warm_up(self) -> dict[str, Any]:
        """Load the model and the dense snapshot before the first request (startup, /readyz)."""
        self.embedder.encode(["warm up"])
        snap = self.dense.snapshot()
        return {"rows": snap.size, "version": snap.version}
