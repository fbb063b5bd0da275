"""Small helpers every layer of the core shares: content hashing, UTC time, percentiles.

Private to ``context_store``: outside code gets these through the sub-package surfaces
that need them. Each helper exists here once so the rule it encodes (what a content hash
is, that a naive time means UTC, how a percentile of nothing reads) cannot drift apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import overload

import numpy as np

__all__ = ["as_utc", "percentile", "sha256", "utcnow"]


def sha256(data: bytes | str) -> str:
    """The hex SHA-256 of ``data``; text is hashed as UTF-8."""
    return hashlib.sha256(data.encode("utf-8") if isinstance(data, str) else data).hexdigest()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """An aware UTC datetime: a naive one is taken to be UTC already (that is how we store times)."""
    if value is None:
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100, linear interpolation), or ``None`` for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if len(values) else None
