"""Alembic environment: the target is ``SQLModel.metadata`` with every freshcontext table.

Run through ``context_store.store.database`` (``create_schema``, ``freshcontext db ...``), which
hands us an open connection in ``config.attributes["connection"]``; a bare URL in the
``sqlalchemy.url`` option works too. Batch mode makes ALTERs work on SQLite as well.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine
from sqlmodel import SQLModel

from context_store.store import models  # noqa: F401  (registers every table on SQLModel.metadata)
from context_store.store.migrations.options import comparison_options

config = context.config
target_metadata = SQLModel.metadata


def _configure(connection: Any) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, **comparison_options())


def run_migrations() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations()
