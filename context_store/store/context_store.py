"""``ContextStore``: the SQL engine and the LanceDB tables of one home, opened together."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session

from context_store.errors import StoreError
from context_store.settings import Settings
from context_store.store.database import get_engine, session_scope
from context_store.store.deployments import apply_deployment, serving_deployment
from context_store.store.vector_index import VectorIndex

__all__ = ["ContextStore"]


class ContextStore:
    """``settings`` are the effective ones: with no explicit ``index``, the serving deployment's
    model, chunker and tables (see ``deployments``); ``configured`` is what the config file asks for."""

    def __init__(self, settings: Settings, *, index: VectorIndex | None = None) -> None:
        self.configured = settings
        self.settings = settings
        self._engine: Engine | None = None
        self.deployment: Any = None
        if index is None:
            self.deployment = serving_deployment(self.engine, settings)
            self.settings = apply_deployment(settings, self.deployment)
            index = VectorIndex(
                settings.vector_uri, company_table=self.deployment.company_table, user_table=self.deployment.user_table,
                storage_options=settings.vector_storage_options(),
            )
        self.index = index

    @classmethod
    def open(cls, home: str | Path | None = None, **overrides: Any) -> "ContextStore":
        return cls(Settings.load(home, **overrides))

    def ensure_current_deployment(self) -> None:
        """Raise if another process promoted a new index since this store was opened.

        A long-running writer (the watcher, a server) holds the old model; writing on would put
        old-model rows into tables nobody serves while SQL records them as indexed.
        """
        if self.deployment is None:
            return
        serving = serving_deployment(self.engine, self.configured)
        if serving.fingerprint != self.deployment.fingerprint:
            raise StoreError(
                f"index {serving.fingerprint} (model {serving.model}) was promoted after this process opened "
                f"{self.settings.home} with {self.deployment.fingerprint}; restart it to write to the new index"
            )

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self.settings.home.mkdir(parents=True, exist_ok=True)
            self._engine = get_engine(self.settings.sql_url)
        return self._engine

    def ping(self) -> None:
        """Raise if the SQL database cannot answer a trivial query (readiness probes)."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    @contextmanager
    def session(self, within: Session | None = None) -> Iterator[Session]:
        """A new transaction, committed on success; or ``within``, the caller's, which the caller commits."""
        if within is not None:
            yield within
            return
        with session_scope(self.engine) as session:
            yield session
