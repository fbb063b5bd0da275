"""The list of inputs we could not use and why, kept until the input is fixed or removed."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlmodel import Session, col, select

from context_store.store.models import SkippedInput

__all__ = ["open_skips", "record_skip", "resolve_skips"]


def record_skip(
    session: Session, *, state_kind: str, source_name: str, path: str, reason: str, detail: str, now: datetime
) -> None:
    existing = session.exec(
        select(SkippedInput).where(
            SkippedInput.path == path, SkippedInput.state_kind == state_kind, col(SkippedInput.resolved_at).is_(None)
        )
    ).first()
    if existing is None:
        session.add(
            SkippedInput(
                state_kind=state_kind, source_name=source_name, path=path, reason=reason, detail=detail,
                first_seen=now, last_seen=now,
            )
        )
    else:
        existing.reason, existing.detail, existing.last_seen = reason, detail, now
        session.add(existing)


def resolve_skips(session: Session, *, state_kind: str, paths: Iterable[str], now: datetime) -> int:
    wanted = set(paths)
    if not wanted:
        return 0
    rows = session.exec(
        select(SkippedInput).where(SkippedInput.state_kind == state_kind, col(SkippedInput.resolved_at).is_(None))
    ).all()
    resolved = 0
    for row in rows:
        # a record-level skip is keyed "file:line"; a clean file resolves all of its lines
        if row.path in wanted or row.path.rsplit(":", 1)[0] in wanted:
            row.resolved_at = now
            session.add(row)
            resolved += 1
    return resolved


def open_skips(session: Session, state_kind: str | None = None) -> list[SkippedInput]:
    query = select(SkippedInput).where(col(SkippedInput.resolved_at).is_(None))
    if state_kind:
        query = query.where(SkippedInput.state_kind == state_kind)
    return list(session.exec(query.order_by(col(SkippedInput.last_seen).desc())).all())
