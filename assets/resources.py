"""Resources the assets declare; ``pipeline.resources`` instantiates them for an environment."""


import re
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import PrivateAttr

from context_store.index import Embedder, build_embedder
from context_store.settings import EmbeddingConfig, Settings
from context_store.store import ContextStore

__all__ = ["EmbedderResource", "StoreResource", "source_configs_for_dirs"]


def source_configs_for_dirs(dirs: list[str]) -> list[dict[str, Any]]:
    """Name each directory after its folder name (made unique), so doc ids stay readable."""
    sources: list[dict[str, Any]] = []
    used: set[str] = set()
    for raw in dirs:
        base = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(raw).resolve().name) or "source"
        name, n = base, 2
        while name in used:
            name, n = f"{base}-{n}", n + 1
        used.add(name)
        sources.append({"name": name, "path": str(Path(raw).resolve())})
    return sources


class StoreResource(dg.ConfigurableResource):
    """The SQL store and LanceDB tables of one freshcontext home."""

    home: str = ""  # empty: FRESHCONTEXT_HOME, else ./.freshcontext (resolved at run time)
    company_dirs: list[str] = []  # when given, replace the configured company sources
    user_dirs: list[str] = []
    show_progress: bool = False
    trigger: str = "dagster"

    _store: "ContextStore | None" = PrivateAttr(default=None)

    def open(self) -> ContextStore:
        if self._store is None:
            overrides: dict[str, Any] = {}
            if self.company_dirs:
                overrides["company_sources"] = source_configs_for_dirs(self.company_dirs)
            if self.user_dirs:
                overrides["user_sources"] = source_configs_for_dirs(self.user_dirs)
            self._store = ContextStore(Settings.load(self.home or None, **overrides))
        return self._store


class EmbedderResource(dg.ConfigurableResource):
    """The embedding model (ONNX export or sentence-transformers); empty ``model`` means the home's configured one."""

    model: str = ""
    batch_size: int = 0

    _embedder: "Embedder | None" = PrivateAttr(default=None)

    def for_config(self, config: EmbeddingConfig, home: Path | None = None) -> Embedder:
        """A model other than the serving one (a candidate index the promotion gate evaluates)."""
        return build_embedder(config, home)

    def for_store(self, store: ContextStore) -> Embedder:
        if self._embedder is None:
            config = store.settings.embedding.model_copy(
                update={k: v for k, v in (("model", self.model), ("batch_size", self.batch_size)) if v}
            )
            self._embedder = build_embedder(config, store.settings.home)
        return self._embedder
