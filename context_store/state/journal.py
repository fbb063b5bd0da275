"""The change journal: file events in arrival order, read after a cursor, applied in batches.

Writers (the watcher, a restart's rescan request, retries) only *append*; readers (the
Dagster sensors and the warm path) read rows after a cursor, coalesce them into the set of
paths that changed per kind of state, and hand those paths to the same sync code a full
ingest uses. Applying a batch twice is harmless: versioning compares content hashes, so a
second pass finds nothing new. That is what makes the journal safe to replay after a crash
and lets the warm path and Dagster share it.

Appends are idempotent through a fingerprint of the file state (path, mtime, ctime, size):
duplicate notifications, an editor's burst of modify events and a restarted watcher's
re-reports of the same file state all become one row.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import delete, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col, select, update

from context_store._common import sha256, utcnow
from context_store.settings import Settings
from context_store.state.roots import source_for
from context_store.state.sources import is_ignored_name
from context_store.store.context_store import ContextStore
from context_store.store.database import in_batches
from context_store.store.models import ChangeEvent

__all__ = [
    "JournalBatch",
    "JournalEntry",
    "MAX_PATHS_PER_RUN",
    "STATE_KINDS",
    "TRANSIENT_REASONS",
    "append",
    "coalesce",
    "entry_for_path",
    "latest_id",
    "mark_applied",
    "prune",
    "read_after",
    "rescan_entry",
    "retry_entry",
    "unapplied_ids",
]

log = logging.getLogger(__name__)

STATE_KINDS = ("company", "user")
# Above this many distinct paths a full re-hash is cheaper than a path list (and the run
# config stays small): a bulk copy or checkout becomes one full scan, not a 50,000-path run.
MAX_PATHS_PER_RUN = 2000
# Skip reasons a file still being written (or briefly locked) produces; worth a retry.
TRANSIENT_REASONS = frozenset({"unreadable", "empty", "invalid_utf8", "malformed_json"})


@dataclass(frozen=True)
class JournalEntry:
    state_kind: str
    source_name: str
    path: str
    event: str  # changed | deleted | rescan | retry
    fingerprint: str
    source_mtime: datetime | None = None
    size: int | None = None


def entry_for_path(settings: Settings, path: str | Path, *, deleted: bool = False, now: datetime | None = None) -> JournalEntry | None:
    """A journal entry for the current state of one file, or ``None`` when it is no input.

    A path that no longer exists is a deletion whatever event announced it; hidden and
    editor temporary files are never inputs.
    """
    resolved = Path(path).resolve()  # a link is journaled as its target: one out of every root is no input
    held = source_for(settings, resolved)
    if held is None or is_ignored_name(resolved.name):
        return None
    try:
        str(resolved).encode("utf-8")
    except UnicodeEncodeError:
        return None  # a name that is not UTF-8 cannot be journaled; the reconciliation's scan records its skip
    kind, source = held.state_kind, held.source
    # hidden folders below the root are skipped by the scanner, so they are no input either
    if any(part.startswith(".") for part in resolved.relative_to(held.root).parts[:-1]):
        return None
    try:
        st = None if deleted else resolved.stat()
    except OSError:
        st = None
    if st is not None and not resolved.is_file():
        return None
    now = now or utcnow()
    if st is None:
        # a deletion has no file state to key on; the time keeps two deletions of one path apart
        fp = sha256(f"{kind}\0{resolved}\0deleted\0{now.isoformat()}")
        return JournalEntry(kind, source.name, str(resolved), "deleted", fp)
    fp = sha256(f"{kind}\0{resolved}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_size}")
    mtime = datetime.fromtimestamp(st.st_mtime, tz=timezone.utc)
    return JournalEntry(kind, source.name, str(resolved), "changed", fp, mtime, st.st_size)


def rescan_entry(state_kind: str, source_name: str, root: str | Path, *, reason: str, now: datetime | None = None) -> JournalEntry:
    """Ask for a full re-hash of one kind of state (watcher start, directory moves, lost events)."""
    now = now or utcnow()
    fp = sha256(f"{state_kind}\0{root}\0rescan\0{reason}\0{now.isoformat()}")
    return JournalEntry(state_kind, source_name, str(root), "rescan", fp)


def retry_entry(entry: JournalEntry | ChangeEvent, attempt: int) -> JournalEntry:
    """The same path again, for a read that failed transiently (partial write, lock)."""
    fp = sha256(f"{entry.fingerprint}\0retry\0{attempt}")
    return JournalEntry(entry.state_kind, entry.source_name, entry.path, "retry", fp, entry.source_mtime, entry.size)


def append(store: ContextStore, entries: Iterable[JournalEntry], *, now: datetime | None = None) -> int:
    """Append entries; an entry whose fingerprint is already journaled is dropped. Returns rows added."""
    now = now or utcnow()
    unique: dict[str, JournalEntry] = {}
    for entry in entries:
        unique.setdefault(entry.fingerprint, entry)
    if not unique:
        return 0
    added = 0
    with store.session() as session:
        known: set[str] = set()
        for part in in_batches(list(unique)):
            known.update(session.exec(select(ChangeEvent.fingerprint).where(col(ChangeEvent.fingerprint).in_(part))).all())
        rows = [
            {**asdict(e), "seen_at": now, "applied_at": None, "applied_by": None}
            for fp, e in unique.items()
            if fp not in known
        ]
        if rows:
            dialect = store.engine.dialect.name
            if dialect in ("sqlite", "postgresql"):
                # a concurrent writer may have journaled the same state since we looked
                dialect_insert = sqlite.insert if dialect == "sqlite" else postgresql.insert
                stmt = dialect_insert(ChangeEvent).on_conflict_do_nothing(index_elements=["fingerprint"])
            else:  # pragma: no cover - other databases: the look-up above is the guard
                stmt = insert(ChangeEvent)
            result = session.connection().execute(stmt, rows)
            added = result.rowcount if result.rowcount is not None and result.rowcount >= 0 else len(rows)
    return added


def latest_id(store: ContextStore) -> int:
    with store.session() as session:
        return session.exec(select(ChangeEvent.id).order_by(col(ChangeEvent.id).desc()).limit(1)).first() or 0


def read_after(
    store: ContextStore,
    cursor: int,
    *,
    state_kind: str | None = None,
    unapplied_only: bool = False,
    limit: int = 50_000,
) -> list[ChangeEvent]:
    """Journal rows with ``id > cursor``, oldest first."""
    with store.session() as session:
        query = select(ChangeEvent).where(col(ChangeEvent.id) > cursor)
        if state_kind:
            query = query.where(ChangeEvent.state_kind == state_kind)
        if unapplied_only:
            query = query.where(col(ChangeEvent.applied_at).is_(None))
        return list(session.exec(query.order_by(col(ChangeEvent.id)).limit(limit)).all())


def unapplied_ids(store: ContextStore, paths: Iterable[str | Path], *, state_kind: str | None = None) -> list[int]:
    """Ids of the rows not applied yet that name one of ``paths`` (resolved as the journal writes them)."""
    wanted = sorted({str(Path(p).resolve()) for p in paths})
    ids: list[int] = []
    with store.session() as session:
        for part in in_batches(wanted):
            query = select(ChangeEvent.id).where(col(ChangeEvent.path).in_(part), col(ChangeEvent.applied_at).is_(None))
            if state_kind:
                query = query.where(ChangeEvent.state_kind == state_kind)
            ids.extend(int(i) for i in session.exec(query).all() if i is not None)
    return sorted(ids)


@dataclass
class JournalBatch:
    """What one kind of state needs after a run of journal rows: paths, or a full scan."""

    state_kind: str
    ids: list[int] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    full_scan: bool = False
    events: int = 0
    oldest_seen_at: datetime | None = None

    @property
    def first_id(self) -> int:
        return min(self.ids) if self.ids else 0

    @property
    def last_id(self) -> int:
        return max(self.ids) if self.ids else 0

    def sync_paths(self) -> list[str] | None:
        """``None`` means re-hash every source of this kind."""
        return None if self.full_scan else self.paths


def coalesce(rows: Sequence[ChangeEvent]) -> dict[str, JournalBatch]:
    """Collapse rows into one batch per kind: each path once, whatever mix of events named it."""
    batches: dict[str, JournalBatch] = {}
    paths: dict[str, set[str]] = {}
    for row in rows:
        batch = batches.setdefault(row.state_kind, JournalBatch(row.state_kind))
        batch.ids.append(int(row.id or 0))
        batch.events += 1
        if batch.oldest_seen_at is None or row.seen_at < batch.oldest_seen_at:
            batch.oldest_seen_at = row.seen_at
        if row.event == "rescan":
            batch.full_scan = True
        else:
            paths.setdefault(row.state_kind, set()).add(row.path)
    for kind, batch in batches.items():
        batch.paths = sorted(paths.get(kind, ()))
        if len(batch.paths) > MAX_PATHS_PER_RUN:
            batch.full_scan = True
        if batch.full_scan:
            batch.paths = []
    return batches


def mark_applied(
    store: ContextStore,
    *,
    by: str,
    ids: Iterable[int] | None = None,
    state_kind: str | None = None,
    id_range: tuple[int, int] | None = None,
    seen_before: datetime | None = None,
    at: datetime | None = None,
) -> int:
    """Stamp rows as applied (first applier wins). Select by ids, an id range, or "seen before"."""
    at = at or utcnow()
    stmt = update(ChangeEvent).where(col(ChangeEvent.applied_at).is_(None))
    if ids is not None:
        id_list = list(ids)
        if not id_list:
            return 0
        stmt = stmt.where(col(ChangeEvent.id).in_(id_list))
    if state_kind:
        stmt = stmt.where(ChangeEvent.state_kind == state_kind)
    if id_range is not None:
        stmt = stmt.where(col(ChangeEvent.id) >= id_range[0], col(ChangeEvent.id) <= id_range[1])
    if seen_before is not None:
        stmt = stmt.where(col(ChangeEvent.seen_at) < seen_before)
    with store.session() as session:
        result = session.execute(stmt.values(applied_at=at, applied_by=by))
        return int(result.rowcount or 0)


def prune(store: ContextStore, *, older_than: datetime) -> int:
    """Delete applied rows seen before ``older_than``; unapplied rows stay until something applies them."""
    stmt = delete(ChangeEvent).where(col(ChangeEvent.applied_at).is_not(None), col(ChangeEvent.seen_at) < older_than)
    with store.session() as session:
        return int(session.execute(stmt).rowcount or 0)
