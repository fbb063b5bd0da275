"""Alembic migrations: they build exactly what models.py declares, on SQLite and PostgreSQL.

``test_models_and_migrations_agree`` is the guard for everyone adding tables: when it fails,
run ``make migration MSG="what you added"`` (README, "Migrations") and commit the new file.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlmodel import Field, SQLModel

from context_store.store import database, models
from context_store.store.database import (
    BASELINE_REVISION,
    downgrade,
    get_engine,
    head_revision,
    make_engine,
    migrate,
    new_revision,
    schema_drift,
    schema_revision,
)
from tests.conftest import REPO

_names = itertools.count()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.scaleout)])
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db' / 'freshcontext.db'}"
    return request.getfixturevalue("pg_server").create_database(f"mig{os.getpid()}_{next(_names)}")


def test_models_and_migrations_agree(sql_url: str) -> None:
    engine = make_engine(sql_url)
    migrate(engine)
    assert schema_revision(engine) == head_revision()
    drift = schema_drift(engine)
    assert drift.ok, (
        "models.py and the Alembic revisions differ; run  make migration MSG='what changed'  and commit the new "
        f"file under context_store/store/migrations/versions:\n{drift.describe()}"
    )


def test_every_revision_downgrades_and_upgrades_again(sql_url: str) -> None:
    engine = make_engine(sql_url)
    migrate(engine)
    downgrade(engine, "base")
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    migrate(engine)
    assert schema_drift(engine).ok


def test_a_database_made_before_migrations_is_stamped_and_upgraded(sql_url: str) -> None:
    engine = make_engine(sql_url)
    migrate(engine, BASELINE_REVISION)  # the foundation's create_all made these tables ...
    with engine.begin() as conn:
        # ... and main's create_all, before migrations, also the API's and freshness tables
        for model in (models.RetrievalTrace, models.ChangeEvent, models.VersionLag):
            model.__table__.create(conn)  # type: ignore[attr-defined]
        conn.execute(text("DROP TABLE alembic_version"))
        conn.execute(
            text("INSERT INTO documents (doc_id, source_name, rel_path, kind) VALUES ('kb/a.md', 'kb', 'a.md', 'article')")
        )
    get_engine.cache_clear()
    upgraded = get_engine(sql_url)
    assert schema_revision(upgraded) == head_revision() and schema_drift(upgraded).ok
    with upgraded.connect() as conn:
        assert conn.execute(text("SELECT doc_id FROM documents")).scalars().all() == ["kb/a.md"]


def test_processes_starting_together_on_a_fresh_database_migrate_once(sql_url: str) -> None:
    code = "import sys; from context_store.store.database import get_engine, schema_revision; print(schema_revision(get_engine(sys.argv[1])))"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, sql_url], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in results]
    assert {out.strip() for out, _ in results} == {head_revision()}


def test_one_command_writes_the_next_revision_for_a_new_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the lead runs after merging a branch that added tables."""
    migrations = tmp_path / "migrations"
    shutil.copytree(database.MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(database, "MIGRATIONS_DIR", migrations)

    class ProbeTable(SQLModel, table=True):
        __tablename__ = "probe_routed_questions"
        id: int | None = Field(default=None, primary_key=True)
        question: str = Field(index=True)

    try:
        before = head_revision()
        engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
        migrate(engine)
        assert not schema_drift(engine).ok  # the guard above would fail now
        written = new_revision("routing tables")
        assert written is not None and written.parent == migrations / "versions"
        source = written.read_text()
        assert "probe_routed_questions" in source and "sa.String()" in source and "context_store" not in source
        assert head_revision() == f"{int(before) + 1:04d}"
        migrate(engine)  # an existing database takes the new revision in place
        assert schema_drift(engine).ok and "probe_routed_questions" in inspect(engine).get_table_names()
        assert new_revision("nothing new") is None
    finally:
        SQLModel.metadata.remove(ProbeTable.__table__)  # type: ignore[attr-defined]


def test_sqlite_and_postgres_urls_share_one_schema_head(sql_url: Any) -> None:
    engine = get_engine(sql_url)
    tables = set(inspect(engine).get_table_names())
    assert {"documents", "document_versions", "embeddings", "lineage_locks", "alembic_version"} <= tables
    indexes = {ix["name"]: ix for ix in inspect(engine).get_indexes("document_versions")}
    assert indexes["uq_document_versions_open"]["unique"]
