"""Options shared by ``env.py`` (running and writing revisions) and the model/migration diff."""

from __future__ import annotations

from typing import Any

from sqlalchemy import types
from sqlmodel.sql.sqltypes import AutoString

__all__ = ["comparison_options", "render_item"]


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


def comparison_options() -> dict[str, Any]:
    """What autogenerate compares: tables, columns, types, nullability, indexes, constraints."""
    return {"compare_type": True, "compare_server_default": False, "render_item": render_item, "render_as_batch": True}
