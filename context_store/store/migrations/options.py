"""Options shared by ``env.py`` (running and writing revisions) and the model/migration diff."""

from __future__ import annotations

from typing import Any

from sqlalchemy import types
from sqlmodel.sql.sqltypes import AutoString

__all__ = ["comparison_options", "idempotent_creates", "render_item"]


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Write portable SQLAlchemy types into revisions, never our own classes.

    A revision must keep working after ``models.py`` changes, so ``UTCDateTime`` is written
    as the ``DateTime(timezone=True)`` it stores and SQLModel's ``AutoString`` as ``String``.
    """
    if type_ == "type":
        if isinstance(obj, AutoString):
            return "sa.String()"
        if isinstance(obj, types.TypeDecorator):
            impl = obj.impl
            if isinstance(impl, types.DateTime):
                return f"sa.DateTime(timezone={bool(impl.timezone)})"
            return f"sa.{impl!r}"
    return False


def idempotent_creates(context: Any, revision: Any, directives: list[Any]) -> None:
    """New tables and indexes are written ``if_not_exists=True``.

    A database made by ``create_all`` before migrations existed (or on a branch that added
    tables before its revision was written) already has some of them; it is stamped at the
    baseline and then upgraded, and these revisions must pass over what is already there.
    """
    from alembic.operations import ops

    def visit(op: Any) -> None:
        if isinstance(op, (ops.CreateTableOp, ops.CreateIndexOp)):
            op.if_not_exists = True
        for child in getattr(op, "ops", []) or []:
            visit(child)

    for directive in directives:
        for upgrade in directive.upgrade_ops_list:
            visit(upgrade)


def comparison_options() -> dict[str, Any]:
    """What autogenerate compares: tables, columns, types, nullability, indexes, constraints."""
    return {
        "compare_type": True,
        "compare_server_default": False,
        "render_item": render_item,
        "render_as_batch": True,
        "process_revision_directives": idempotent_creates,
    }
