"""A log of ingest steps (who ran what, when, with which counts) for ``status`` and reports."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlmodel import col, select

from context_store._common import utcnow
from context_store.store.context_store import ContextStore
from context_store.store.models import IngestRun

__all__ = ["FTS_DEFERRED", "STAGE_FTS", "last_runs", "numeric_stats", "track_run"]

# An index run with this stat left compaction and full-text indexing of its rows to a later
# run of stage ``STAGE_FTS``; without it, the index run's own end is when its rows were covered.
FTS_DEFERRED = "fts_deferred"
STAGE_FTS = "fts"


def numeric_stats(report: Any) -> dict[str, Any]:
    """The counts and durations of a sync or index report, as a run row stores them."""
    return {k: v for k, v in report.as_dict().items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


@contextmanager
def track_run(store: ContextStore, state_kind: str, stage: str, trigger: str = "cli") -> Iterator[dict[str, Any]]:
    """Record a run row; the caller fills the yielded dict with stats. Failures are recorded too."""
    with store.session() as session:
        run = IngestRun(state_kind=state_kind, stage=stage, trigger=trigger)
        session.add(run)
    stats: dict[str, Any] = {}
    status = "failed"
    try:
        yield stats
        status = "succeeded"
    finally:
        with store.session() as session:
            row = session.get(IngestRun, run.id)
            if row is not None:
                row.finished_at, row.status, row.stats = utcnow(), status, stats or None
                session.add(row)


def last_runs(store: ContextStore, limit: int = 10) -> list[IngestRun]:
    with store.session() as session:
        return list(session.exec(select(IngestRun).order_by(col(IngestRun.id).desc()).limit(limit)).all())
