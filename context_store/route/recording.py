"""Group commit: what concurrent ``respond()`` calls record shares one transaction.

Every recorded response writes a few rows — its trace, its asked-question log entry and,
when escalated, the routed question with its ask (and outbox message) — and it must not
be answered before they are stored: a trace id the agent holds always resolves, and a
question it was told is queued is queued. A transaction per request costs a connection,
a commit and, under load, waiting for the database's write lock behind the other
requests' transactions (SQLite takes one writer at a time, and a busy writer sleeps in
steps of up to 100 ms). ``GroupCommit.run(work)`` keeps the guarantee and shares the cost:
the first caller commits its own work at once; callers arriving meanwhile queue, and the
next of them commits everything queued in one transaction (``Coalescer``), so nobody
waits for a batch to fill. Each caller returns only after the transaction holding its rows
committed; a ``kill -9`` loses no row of a response that was sent.

A unit of work is ``work(writes) -> result``. ``Writes`` is the transaction's Core
connection: rows a unit ``add``s are kept and written at the end, one ``executemany`` per
table for the whole batch, in foreign-key order; a statement a unit ``execute``s runs at
once, after the rows of its table (and of the tables before it) were written, so a unit
joining a question another unit of the batch just queued finds it. The ORM (no identity
map, no unit of work) is only opened for the rare writers that need it (``session()``).

Each unit of work stays atomic (a routed question and its trace are in one transaction).
When a batch fails, its units are retried one transaction each, so one bad unit fails only
its own request.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sqlalchemy import Table, insert
from sqlalchemy.engine import Connection, Engine, Result
from sqlmodel import Session, SQLModel

from context_store.index.embed.coalesce import Coalescer

__all__ = ["GroupCommit", "Writes", "group_commit", "writes_scope"]

T = TypeVar("T")
Work = Callable[["Writes"], Any]


class Writes:
    """The writes of one transaction: rows kept per table until ``flush``, statements run at once.

    ``target`` is a Core connection in a transaction (the group commit's, or a lone writer's),
    or an ORM session whose transaction the rows join (a caller that holds one already).
    """

    def __init__(self, target: Connection | Session) -> None:
        self.target = target
        self._rows: dict[Table, list[dict[str, Any]]] = {}
        self._session: Session | None = target if isinstance(target, Session) else None

    def add(self, table: Table, row: dict[str, Any]) -> None:
        """Insert ``row`` into ``table`` with this transaction (written by ``flush``, before the commit)."""
        self._rows.setdefault(table, []).append(row)

    def execute(self, statement: Any, params: Any = None) -> Result[Any]:
        """Run ``statement`` now. An UPDATE/DELETE/INSERT first writes the kept rows of its table and
        the tables it may refer to; any other statement, every kept row (it may read any table)."""
        self.flush(getattr(statement, "table", None))
        return self.target.execute(statement, params)

    def session(self) -> Session:
        """An ORM session in this transaction, for the rare writers that load objects; kept rows are written first."""
        self.flush()
        if self._session is None:
            self._session = Session(bind=self.target, expire_on_commit=False)
        return self._session

    @property
    def url(self) -> str:
        bind = self.target.get_bind() if isinstance(self.target, Session) else self.target
        return str(bind.engine.url)  # a session's bind may be an engine or a connection; both name their engine

    def flush(self, upto: Table | None = None) -> None:
        """Write the kept rows (all, or those of ``upto`` and the tables before it in foreign-key order)."""
        if self._session is not None and self._session is not self.target:
            self._session.flush()  # its objects were made before any row kept since
        if not self._rows:
            return
        rank = _table_rank()
        limit = rank.get(upto, len(rank)) if upto is not None else len(rank)
        for table in sorted(self._rows, key=lambda t: rank.get(t, len(rank))):
            if rank.get(table, len(rank)) > limit:
                break
            self.target.execute(_insert(table), self._rows.pop(table))

    def close(self) -> None:
        self.flush()
        if self._session is not None and self._session is not self.target:
            self._session.close()


_RANK: dict[Table, int] = {}
_INSERTS: dict[Table, Any] = {}


def _table_rank() -> dict[Table, int]:
    """Tables in foreign-key order (parents first), so a batch's rows never precede the rows they name."""
    if not _RANK:
        _RANK.update({t: i for i, t in enumerate(SQLModel.metadata.sorted_tables)})
    return _RANK


def _insert(table: Table) -> Any:
    # One statement object per table: SQLAlchemy memoises its cache key, so it is not recomputed per batch.
    stmt = _INSERTS.get(table)
    if stmt is None:
        stmt = _INSERTS[table] = insert(table)
    return stmt


@contextmanager
def writes_scope(engine: Engine, within: Session | Writes | None = None) -> Iterator[Writes]:
    """``within`` when it is a ``Writes`` (the caller flushes and commits); the rows of the block
    joined to ``within``'s ORM transaction at its end; else a new transaction, committed at the end."""
    if isinstance(within, Writes):
        yield within
        return
    if within is not None:
        writes = Writes(within)
        yield writes
        writes.close()
        return
    with engine.begin() as conn:
        writes = Writes(conn)
        yield writes
        writes.close()


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class GroupCommit:
    """Runs units of work (``work(writes) -> result``) from many threads, several per transaction."""

    def __init__(self, engine: Engine, *, max_batch: int = 32) -> None:
        self.engine = engine
        self._batch = Coalescer(self._commit, max_batch=max_batch)

    def run(self, work: Callable[[Writes], T]) -> T:
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
            return self._transaction(works)  # an error reaches its only caller as it is
        try:
            return self._transaction(works)
        except Exception:  # one unit's failure must not fail the others: each alone
            return [self._alone(work) for work in works]

    def _transaction(self, works: list[Work]) -> list[Any]:
        with writes_scope(self.engine) as writes:
            return [work(writes) for work in works]

    def _alone(self, work: Work) -> Any:
        try:
            return self._transaction([work])[0]
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
