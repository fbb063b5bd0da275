"""Engine and sessions. SQLite (WAL, busy timeout) by default; PostgreSQL with the same code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, event, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from context_store import models  # noqa: F401  (registers the tables on SQLModel.metadata)

__all__ = ["bulk_update", "create_schema", "get_engine", "session_scope"]


@lru_cache(maxsize=32)
def get_engine(url: str) -> Engine:
    """One engine per URL per process; SQLite gets WAL so readers never block the writer."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

    else:
        engine = create_engine(url, pool_pre_ping=True)
    create_schema(engine)
    return engine


def create_schema(engine: Engine) -> None:
    SQLModel.metadata.create_all(engine)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on any exception."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def bulk_update(session: Session, model: type[SQLModel], key: str, rows: list[dict[str, Any]]) -> None:
    """``UPDATE … WHERE key = :key`` as one executemany per distinct set of columns."""
    table = model.__table__  # type: ignore[attr-defined]
    groups: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row)), []).append({f"b_{k}": v for k, v in row.items()})
    for columns, params in groups.items():
        session.execute(
            update(table)
            .where(table.c[key] == bindparam(f"b_{key}"))
            .values({c: bindparam(f"b_{c}") for c in columns if c != key}),
            params,
        )
