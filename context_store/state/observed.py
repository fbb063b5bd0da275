"""What the pipeline last saw of each source file, and what changed since without it noticing.

Every sync records the ``stat`` (mtime, size) of each file it listed (``record_observations``,
in the sync's own transaction). ``unobserved_changes`` stats every configured source — no
reading, no hashing — and compares: a file whose stat differs from its record was *changed*,
a file with no record was *added*, a record whose file is gone was *removed*. A path that an
unapplied journal row names is left out: the watcher saw it, and it waits in the backlog
(``measure.backlog.unindexed_changes``). What remains is what nobody told the pipeline about
— with no watcher running, everything until the next reconciliation.

When did an unobserved change happen? For a changed or added file, its mtime (never before
the record of what it was, never in the future). For a removed file, the mtime of the folder
it was in, when that folder changed after the record; otherwise the record's time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from context_store._common import as_utc, utcnow
from context_store.errors import SourceError
from context_store.settings import SourceConfig
from context_store.state.roots import SourceRoots
from context_store.state.sources import SourceFile, printable_path
from context_store.store.context_store import ContextStore
from context_store.store.database import in_batches
from context_store.store.models import ChangeEvent, SourceObservation

__all__ = ["SourceUnobserved", "UnobservedChange", "UnobservedReport", "record_observations", "unobserved_changes"]

SAMPLE = 20  # changes listed per source (all are counted)


def record_observations(
    session: Session, state_kind: str, source: SourceConfig, files: Sequence[SourceFile], *, only: Iterable[Path] | None, now: datetime
) -> int:
    """Remember the stat of each file a sync of ``source`` just listed; forget the files gone from it.

    ``only`` (a path sync: resolved paths this source holds): just those were looked at, so
    only they can be forgotten. A row is written only where the stat changed, so reconciling
    an unchanged tree writes nothing. Returns rows written or deleted.
    """
    seen = {f.where: (f.mtime_ns, f.size) for f in files}  # a name of any bytes is stored as text
    if only is None:
        known = _records(session, state_kind, source.name)
        looked_at = set(known)
    else:
        root, resolved_root = Path(source.path), Path(source.path).resolve()
        looked_at = {printable_path(root / p.relative_to(resolved_root)) for p in only}
        known = _records(session, state_kind, source.name, paths=looked_at | set(seen))
    gone = sorted(p for p in looked_at if p in known and p not in seen)
    for part in in_batches(gone):
        session.execute(delete(SourceObservation).where(col(SourceObservation.path).in_(part)))
    rows = [
        {"path": p, "state_kind": state_kind, "source_name": source.name, "mtime_ns": m, "size": s, "observed_at": now}
        for p, (m, s) in seen.items()
        if known.get(p, (None, None, None))[:2] != (m, s)
    ]
    if rows:
        session.execute(_upsert(session), rows)
    return len(rows) + len(gone)


def _upsert(session: Session) -> Any:
    dialect = session.get_bind().dialect.name
    if dialect not in ("sqlite", "postgresql"):  # pragma: no cover - the two databases we run on
        return insert(SourceObservation)
    stmt = (sqlite.insert if dialect == "sqlite" else postgresql.insert)(SourceObservation)
    return stmt.on_conflict_do_update(
        index_elements=["path"],
        set_={c: stmt.excluded[c] for c in ("state_kind", "source_name", "mtime_ns", "size", "observed_at")},
    )


def _records(
    session: Session, state_kind: str, source_name: str, *, paths: set[str] | None = None
) -> dict[str, tuple[int, int, datetime]]:
    """path -> (mtime_ns, size, observed_at) of one source's records (only ``paths``, when given)."""
    query = select(SourceObservation.path, SourceObservation.mtime_ns, SourceObservation.size, SourceObservation.observed_at).where(
        SourceObservation.state_kind == state_kind, SourceObservation.source_name == source_name
    )
    if paths is None:
        return {p: (m, s, as_utc(o)) for p, m, s, o in session.exec(query).all()}  # type: ignore[misc]
    out: dict[str, tuple[int, int, datetime]] = {}
    for part in in_batches(sorted(paths)):
        out.update({p: (m, s, as_utc(o)) for p, m, s, o in session.exec(query.where(col(SourceObservation.path).in_(part))).all()})  # type: ignore[misc]
    return out


@dataclass(frozen=True)
class UnobservedChange:
    path: str
    change: str  # changed | added | removed
    since: datetime  # when it happened, as well as a stat can tell


@dataclass
class SourceUnobserved:
    """One configured source: its files now, and the changes to them the pipeline has not observed."""

    state_kind: str
    source_name: str
    root: str
    files: int = 0
    changed: int = 0
    added: int = 0
    removed: int = 0
    oldest_since: datetime | None = None
    oldest_age_s: float | None = None
    items: list[UnobservedChange] = field(default_factory=list)  # the oldest ``SAMPLE``
    missing_root: bool = False

    @property
    def count(self) -> int:
        return self.changed + self.added + self.removed

    def as_dict(self) -> dict[str, Any]:
        return {
            "state_kind": self.state_kind, "source": self.source_name, "root": self.root, "files": self.files,
            "count": self.count, "changed": self.changed, "added": self.added, "removed": self.removed,
            "oldest_since": self.oldest_since.isoformat() if self.oldest_since else None,
            "oldest_age_s": None if self.oldest_age_s is None else round(self.oldest_age_s, 3),
            "missing_root": self.missing_root,
            "items": [{"path": i.path, "change": i.change, "since": i.since.isoformat()} for i in self.items],
        }


@dataclass
class UnobservedReport:
    sources: list[SourceUnobserved]
    files: int  # files stat-ed
    seconds: float  # what the scan cost

    @property
    def count(self) -> int:
        return sum(s.count for s in self.sources)

    @property
    def oldest(self) -> SourceUnobserved | None:
        """The source holding the oldest unobserved change (None: there is none)."""
        aged = [s for s in self.sources if s.oldest_age_s is not None]
        return max(aged, key=lambda s: s.oldest_age_s or 0.0) if aged else None

    @property
    def oldest_age_s(self) -> float | None:
        oldest = self.oldest
        return oldest.oldest_age_s if oldest else None

    def as_dict(self) -> dict[str, Any]:
        oldest = self.oldest
        return {
            "count": self.count, "oldest_age_s": None if oldest is None else round(oldest.oldest_age_s or 0.0, 3),
            "oldest_path": oldest.items[0].path if oldest and oldest.items else None,
            "files_scanned": self.files, "scan_seconds": round(self.seconds, 4),
            "sources": [s.as_dict() for s in self.sources],
        }


def unobserved_changes(store: ContextStore, *, now: datetime | None = None) -> UnobservedReport:
    """Stat every configured source and report, per source, the changes no sync or watcher has seen."""
    started = time.perf_counter()
    now = now or utcnow()
    settings = store.settings
    roots = SourceRoots.of(settings)
    with store.session() as session:
        records: dict[tuple[str, str], dict[str, tuple[int, int, datetime]]] = {}
        for p, kind, name, m, s, o in session.exec(
            select(SourceObservation.path, SourceObservation.state_kind, SourceObservation.source_name,
                   SourceObservation.mtime_ns, SourceObservation.size, SourceObservation.observed_at)
        ).all():
            records.setdefault((kind, name), {})[p] = (m, s, as_utc(o))  # type: ignore[assignment]
        journaled = set(session.exec(
            select(ChangeEvent.path).where(col(ChangeEvent.applied_at).is_(None), ChangeEvent.event != "rescan")
        ).all())
    sources = [("company", s) for s in settings.company_sources] + [("user", s) for s in settings.user_sources]
    out, files = [], 0
    for kind, source in sources:
        result = _scan(roots, kind, source, records.get((kind, source.name), {}), journaled, now)
        files += result.files
        out.append(result)
    return UnobservedReport(out, files, time.perf_counter() - started)


def _scan(
    roots: SourceRoots, kind: str, source: SourceConfig, known: dict[str, tuple[int, int, datetime]], journaled: set[str], now: datetime
) -> SourceUnobserved:
    report = SourceUnobserved(kind, source.name, str(source.path))
    try:
        listed = roots.list_files(kind, source, None)
    except SourceError:
        report.missing_root = True  # sources_reachable says so; its records stay as they are
        return report
    report.files = len(listed)
    resolved_root = Path(source.path).resolve()
    changes: list[UnobservedChange] = []
    present = set()
    for f in listed:
        key = f.where
        present.add(key)
        record = known.get(key)
        if record is not None and record[0] == f.mtime_ns and record[1] == f.size:
            continue
        if str(resolved_root / f.rel_path) in journaled:
            continue
        since = min(max(f.mtime, record[2]) if record else f.mtime, now)
        changes.append(UnobservedChange(key, "added" if record is None else "changed", since))
    folders: dict[Path, float | None] = {}
    for key, (_, _, observed) in known.items():
        if key in present:
            continue
        path = Path(key)
        if str(resolved_root / path.relative_to(source.path)) in journaled:
            continue
        changes.append(UnobservedChange(key, "removed", _removed_at(path.parent, observed, now, folders)))
    for c in changes:
        setattr(report, c.change, getattr(report, c.change) + 1)
    changes.sort(key=lambda c: c.since)
    report.items = changes[:SAMPLE]
    if changes:
        report.oldest_since = changes[0].since
        report.oldest_age_s = max(0.0, (now - changes[0].since).total_seconds())
    return report


def _removed_at(folder: Path, observed: datetime, now: datetime, cache: dict[Path, float | None]) -> datetime:
    """A removal changes its folder's mtime: that time when it is after the record, else the record's."""
    if folder not in cache:
        try:
            cache[folder] = os.stat(folder).st_mtime
        except OSError:
            cache[folder] = None  # the folder went too
    mtime = cache[folder]
    if mtime is None:
        return observed
    changed = datetime.fromtimestamp(mtime, tz=timezone.utc)
    return min(changed, now) if changed > observed else observed
