"""Group commit: what concurrent ``respond()`` calls record shares one transaction.

Every recorded response writes a few rows — its trace, its asked-question log entry and,
when escalated, the routed question with its ask (and outbox message) — and it must not
be answered before they are stored: a trace id the agent holds always resolves, and a
question it was told is queued is queued. A transaction per request costs a session, a
connection, a commit and, under load, waiting for the database's write lock behind the
other requests' transactions (SQLite takes one writer at a time, and a busy writer sleeps
in steps of up to 100 ms). ``GroupCommit.run(work)`` keeps the guarantee and shares the
cost: the first caller commits its own work at once; callers arriving meanwhile queue, and
the next of them commits everything queued in one transaction (``Coalescer``), so nobody
waits for a batch to fill. Each caller returns only after the transaction holding its rows
committed; a ``kill -9`` loses no row of a response that was sent.

Each unit of work stays atomic (a routed question and its trace are in one transaction).
When a batch fails, its units are retried one transaction each, so one bad unit fails only
its own request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy.engine import Engine
from sqlmodel import Session

from context_store.index.embed.coalesce import Coalescer
from context_store.store.database import session_scope

__all__ = ["GroupCommit", "group_commit"]

T = TypeVar("T")
Work = Callable[[Session], Any]


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class GroupCommit:
    """Runs units of work (``work(session) -> result``) from many threads, several per transaction."""

    def __init__(self, engine: Engine, *, max_batch: int = 32) -> None:
        self.engine = engine
        self._batch = Coalescer(self._commit, max_batch=max_batch)

    def run(self, work: Callable[[Session], T]) -> T:
        """``work``'s result once the transaction holding its writes has committed."""
        out = self._batch(work)
        if isinstance(out, _Failed):
            raise out.error
        return out

    @property
    def mean_batch(self) -> float:
        return self._batch.mean_batch

    def _commit(self, works: list[Work]) -> list[Any]:
        if len(works) == 1:
            with session_scope(self.engine) as session:
                return [works[0](session)]  # an error reaches its only caller as it is
        try:
            with session_scope(self.engine) as session:
                return [work(session) for work in works]
        except Exception:  # one unit's failure must not fail the others: each alone
            return [self._alone(work) for work in works]

    def _alone(self, work: Work) -> Any:
        try:
            with session_scope(self.engine) as session:
                return work(session)
        except Exception as exc:
            return _Failed(exc)


_WRITERS: dict[Any, GroupCommit] = {}
_WRITERS_LOCK = threading.Lock()


def group_commit(engine: Engine) -> GroupCommit:
    """The process's one ``GroupCommit`` for ``engine``'s database."""
    key = engine.url
    with _WRITERS_LOCK:
        writer = _WRITERS.get(key)
        if writer is None or writer.engine is not engine:
            writer = _WRITERS[key] = GroupCommit(engine)
        return writer
