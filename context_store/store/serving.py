"""Noticing, from a long-running reader, that a promotion switched the serving index.

``promotion.promote`` flips the serving row of ``index_deployments`` in one transaction.
A process that opened the home earlier (the API) still holds the old tables, their dense
snapshot and the old query encoder. ``DeploymentWatch`` lets such a process find out
within a bounded time without paying for it per request: it runs one indexed one-row
SELECT at most once per ``interval`` seconds, and only one thread at a time runs it —
every other caller returns at once with "no change". What to do about a change (load the
new model and tables, then swap) is the caller's job.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy import select
from sqlalchemy.engine import Engine

from context_store.store.models import IndexDeployment

__all__ = ["DeploymentWatch", "serving_fingerprint"]

log = logging.getLogger(__name__)

_SERVING = select(IndexDeployment.fingerprint).where(IndexDeployment.status == "serving").limit(1)  # type: ignore[arg-type]


def serving_fingerprint(engine: Engine) -> str | None:
    """The fingerprint of the serving deployment (``None`` before the home recorded one)."""
    with engine.connect() as conn:
        return conn.execute(_SERVING).scalar_one_or_none()


class DeploymentWatch:
    """Rate-limited comparison of the serving fingerprint with the one this process serves."""

    def __init__(self, engine: Engine, fingerprint: str, *, interval: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.fingerprint = fingerprint
        self.interval = interval
        self.checks = 0
        self._clock = clock
        self._due = clock() + interval
        self._lock = threading.Lock()

    def due(self) -> bool:
        """Whether the next ``changed()`` would look (reads the clock only)."""
        return self._clock() >= self._due

    def changed(self) -> str | None:
        """The newly serving fingerprint when a look is due and it differs from ours, else ``None``."""
        if self._clock() < self._due or not self._lock.acquire(blocking=False):
            return None
        try:
            if self._clock() < self._due:  # another thread looked while we waited for the lock
                return None
            self._due = self._clock() + self.interval
            self.checks += 1
            try:
                found = serving_fingerprint(self.engine)
            except Exception as exc:  # SQL unreachable: keep serving what we have; /readyz reports the database
                log.warning("could not look up the serving index: %s: %s", exc.__class__.__name__, exc)
                return None
            return found if found is not None and found != self.fingerprint else None
        finally:
            self._lock.release()

    def acknowledge(self, fingerprint: str) -> None:
        """This process now serves ``fingerprint``."""
        self.fingerprint = fingerprint

    def retry_after(self, seconds: float) -> None:
        """Look again no sooner than ``seconds`` from now (a failed switch must not be retried every second)."""
        self._due = max(self._due, self._clock() + seconds)
