"""Engines, sessions, schema migrations and the locks concurrent writers take.

SQLite (WAL, busy timeout) by default; PostgreSQL with the same code. The schema is owned
by the Alembic revisions in ``context_store/store/migrations/versions``: ``get_engine`` brings
every database to the newest revision on first use, under a lock, so two processes
starting at once against a fresh database do not both try to create it. A database made
before migrations existed (``create_all``) is recognised and stamped at the baseline.
"""

from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import bindparam, event, inspect, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, SQLModel, create_engine, select

from context_store._common import utcnow
from context_store.errors import StoreError
from context_store.store import models
from context_store.store.migrations.options import comparison_options

__all__ = [
    "BASELINE_REVISION",
    "MIGRATIONS_DIR",
    "SchemaDrift",
    "bulk_update",
    "create_schema",
    "downgrade",
    "SQL_PARAMS",
    "get_engine",
    "in_batches",
    "head_revision",
    "insert_ignore",
    "lineage_lock",
    "make_engine",
    "migrate",
    "new_revision",
    "schema_drift",
    "schema_revision",
    "session_scope",
]

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
# Values per ``IN (...)`` list: below SQLite's bound-parameter limit (999 on older builds).
SQL_PARAMS = 900
T = TypeVar("T")
# The schema the foundation created with ``create_all``; such databases are stamped here.
BASELINE_REVISION = "0001"
# Any constant works; it only has to be the same in every freshcontext process.
_PG_MIGRATION_LOCK = 0x66726573  # "fres"


@lru_cache(maxsize=32)
def get_engine(url: str) -> Engine:
    """One engine per URL per process, its schema upgraded to the newest revision."""
    engine = make_engine(url)
    create_schema(engine)
    return engine


def make_engine(url: str) -> Engine:
    """A new engine that does not touch the schema; SQLite gets WAL so readers never block the writer."""
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
    return engine


def create_schema(engine: Engine) -> None:
    """Bring the database to the newest revision (a no-op when it is there already)."""
    migrate(engine)


# -- migrations --------------------------------------------------------------------------


def _alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    heads = ScriptDirectory.from_config(_alembic_config()).get_heads()
    if len(heads) != 1:
        # two branches each added a revision on the same parent: `alembic merge` them
        raise StoreError(f"migrations have {len(heads)} heads {heads}; merge them into one (see README, Migrations)")
    return heads[0]


def schema_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for an empty or pre-migration database."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def migrate(engine: Engine, revision: str = "head") -> None:
    """Upgrade to ``revision`` under a database-wide lock; concurrent starters wait, then find it done."""
    head = head_revision() if revision == "head" else revision
    if schema_revision(engine) == head:
        return  # the common case: one cheap query per process
    with _migration_lock(engine), engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
        if current is None and inspect(conn).has_table(models.Document.__tablename__):
            # made by create_all before migrations existed: it holds exactly the baseline tables
            command.stamp(_alembic_config(conn), BASELINE_REVISION)
            conn.commit()
        command.upgrade(_alembic_config(conn), revision)
        conn.commit()


def downgrade(engine: Engine, revision: str) -> None:
    """Step the schema back to ``revision`` (``base`` drops every table): for rollbacks and tests."""
    with _migration_lock(engine), engine.connect() as conn:
        command.downgrade(_alembic_config(conn), revision)
        conn.commit()


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _PG_MIGRATION_LOCK})
                conn.commit()
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    import fcntl  # POSIX only, like SQLite's own file locking on the platforms we run on

    with open(f"{database}.migrate-lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclass
class SchemaDrift:
    """What the models declare that the migrations do not create (or the reverse)."""

    url: str
    differences: list[Any]

    @property
    def ok(self) -> bool:
        return not self.differences

    def describe(self) -> str:
        return "\n".join(f"  {d!r}" for d in self.differences)


def schema_drift(engine: Engine) -> SchemaDrift:
    """Compare the migrated database with ``SQLModel.metadata`` (Alembic's autogenerate diff)."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=comparison_options())
        diff = compare_metadata(context, SQLModel.metadata)
    return SchemaDrift(engine.url.render_as_string(hide_password=True), list(diff))


def new_revision(message: str, *, directory: Path | None = None) -> Path | None:
    """Write the next revision for whatever the models added since the newest one.

    Autogenerates against a throwaway SQLite database upgraded to head, so it needs no
    server; the types are written portably (see ``migrations/env.py``), so the same file
    runs on PostgreSQL. Returns the new file, or None when nothing changed. Read it before
    committing: Alembic cannot tell a rename from a drop plus an add.
    """
    head = head_revision()
    rev_id = f"{int(head) + 1:04d}" if head.isdigit() else None
    with tempfile.TemporaryDirectory() as tmp:
        engine = create_engine(f"sqlite:///{tmp}/revision.db")
        try:
            migrate(engine)
            drift = schema_drift(engine)
            if drift.ok:
                return None
            with engine.connect() as conn:
                config = _alembic_config(conn)
                if directory is not None:
                    config.set_main_option("version_locations", str(directory))
                made = command.revision(config, message=message, autogenerate=True, rev_id=rev_id)
        finally:
            engine.dispose()
    first = made[0] if isinstance(made, list) else made
    return Path(first.path) if first is not None else None


# -- sessions and concurrency ------------------------------------------------------------


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


def lineage_lock(session: Session, lineage: str) -> None:
    """Hold the write lock of one state lineage (``company``/``user``) until this transaction ends.

    An upsert of the lineage's row in ``lineage_locks``: on PostgreSQL the row lock makes a
    second writer of the same lineage wait, while readers and the other lineage carry on;
    on SQLite the first write of a transaction takes the database write lock, waiting up to
    the busy timeout instead of failing later on a stale read snapshot. Versioning and the
    commit step of indexing both take it, so two ingests never version the same change twice
    nor let an older version's rows overwrite a newer one's in LanceDB.
    """
    holder = f"{socket.gethostname()}:{os.getpid()}"
    table = models.LineageLock.__table__
    values = {"name": lineage, "holder": holder, "acquired_at": utcnow()}
    dialect = session.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = insert(table).values(**values)
        session.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"holder": holder, "acquired_at": values["acquired_at"]}))
        return
    row = session.exec(select(models.LineageLock).where(models.LineageLock.name == lineage).with_for_update()).first()
    if row is None:
        session.add(models.LineageLock(**values))
        session.flush()


def insert_ignore(session: Session, model: type[SQLModel], rows: Sequence[dict[str, Any]]) -> None:
    """Insert rows, skipping any whose primary key is already there (a concurrent writer's).

    Rows go in primary-key order: two PostgreSQL transactions inserting overlapping keys
    in different orders would wait on each other's uncommitted rows and deadlock.
    """
    if not rows:
        return
    table = model.__table__  # type: ignore[attr-defined]
    keys = [c.name for c in table.primary_key.columns]
    rows = sorted(rows, key=lambda row: tuple(row[k] for k in keys))
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        session.execute(pg_insert(table).on_conflict_do_nothing(), list(rows))
    elif dialect == "sqlite":
        session.execute(sqlite_insert(table).on_conflict_do_nothing(), list(rows))
    else:
        for row in rows:
            if session.get(model, tuple(row[k] for k in keys)) is None:
                session.add(model(**row))
        session.flush()
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


def in_batches(values: Sequence[T], size: int = SQL_PARAMS) -> Iterator[list[T]]:
    """``values`` in slices of at most ``size``, for ``IN (...)`` lists a database accepts."""
    for start in range(0, len(values), size):
        yield list(values[start : start + size])
