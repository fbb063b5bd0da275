"""Column types every table shares: aware UTC datetimes and JSON, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Optional

from sqlalchemy import JSON, Column, DateTime, TypeDecorator
from sqlmodel import Field

from context_store._common import as_utc

__all__ = ["UTCDateTime"]


class UTCDateTime(TypeDecorator):
    """Stores UTC, returns aware UTC datetimes on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Optional[datetime], dialect: Any) -> Optional[datetime]:
        if value is None:
            return None
        return as_utc(value)


def _ts(**kwargs: Any) -> Any:
    index = kwargs.pop("index", False)
    return Field(sa_column=Column(UTCDateTime(), index=index, nullable=kwargs.pop("nullable", True)), **kwargs)


def _json(**kwargs: Any) -> Any:
    return Field(sa_column=Column(JSON, nullable=True), **kwargs)
