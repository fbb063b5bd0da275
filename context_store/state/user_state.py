"""User state: per-user snapshots, versioned one user at a time, never mixed between users."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session, col, select

from context_store._common import utcnow
from context_store.errors import InputRejected, SourceError
from context_store.state.documents import version_id_for
from context_store.state.observed import record_observations
from context_store.state.roots import SourceRoots
from context_store.state.skipped_inputs import record_skip, resolve_skips
from context_store.state.sources import USER_SUFFIXES, SourceFile, UserSnapshotInput, as_rejection, read_source, read_user_file
from context_store.store.context_store import ContextStore
from context_store.store.database import lineage_lock
from context_store.store.models import UserRecord, UserSnapshotVersion

__all__ = ["UserSyncReport", "current_snapshot", "snapshot_age", "sync_user_sources"]

log = logging.getLogger(__name__)


@dataclass
class UserSyncReport:
    files_seen: int = 0
    users_seen: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0
    deleted: int = 0
    skipped: int = 0
    skipped_inputs: list[dict[str, str]] = field(default_factory=list)
    source_errors: list[str] = field(default_factory=list)
    changed_user_ids: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def sync_user_sources(
    store: ContextStore, *, paths: Iterable[str | Path] | None = None, now: datetime | None = None
) -> UserSyncReport:
    """Version every user's latest snapshot; end users whose snapshot source is gone."""
    now = now or utcnow()
    report = UserSyncReport()
    settings = store.settings
    wanted = None if paths is None else {Path(p).resolve() for p in paths}
    with store.session() as session:
        lineage_lock(session, "user")  # see sync_company_sources
        roots = SourceRoots.of(settings)
        for source in settings.user_sources:
            own = None if wanted is None else roots.owned("user", source, wanted)
            if own is not None and not own:
                continue
            try:
                files = roots.list_files("user", source, own)
            except SourceError as exc:
                log.error("%s", exc)
                report.source_errors.append(str(exc))
                continue
            latest: dict[str, UserSnapshotInput] = {}
            troubled_files: set[str] = set()
            clean_files: list[str] = []
            for f in files:
                report.files_seen += 1
                file_ok = True
                for where, item in _read_items(f, source.name, settings.max_file_bytes):
                    if isinstance(item, InputRejected):
                        file_ok = False
                        _skip(session, report, source.name, where, item, now)
                        continue
                    held = latest.get(item.user_id)
                    if held is None or item.captured_at >= held.captured_at:
                        latest[item.user_id] = item
                if file_ok:
                    clean_files.append(str(f.path))
                else:
                    troubled_files.add(str(f.path))
            resolve_skips(session, state_kind="user", paths=clean_files, now=now)
            record_observations(session, "user", source, files, only=own, now=now)
            for snapshot in latest.values():
                report.users_seen += 1
                _apply_snapshot(session, source.name, snapshot, report, now)
            _end_missing_users(session, source.name, set(latest), troubled_files, own, report, now)
    log.info(
        "user sync: %d users, %d new, %d changed, %d deleted, %d skipped",
        report.users_seen, report.new, report.changed, report.deleted, report.skipped,
    )
    return report


def _read_items(f: SourceFile, source_name: str, max_file_bytes: int) -> list[tuple[str, UserSnapshotInput | InputRejected]]:
    """The snapshots one file holds, or its rejection: whatever one file raises is that file's skip."""
    try:
        if f.path.suffix.lower() not in USER_SUFFIXES:
            raise InputRejected("unsupported_type", f"{f.where}: user snapshots must be {', '.join(sorted(USER_SUFFIXES))}")
        limit = max_file_bytes * (1 if f.path.suffix.lower() == ".json" else 100)  # a JSON Lines file holds many users
        return list(read_user_file(source_name, f.path, read_source(f, limit)))
    except Exception as exc:
        if not isinstance(exc, InputRejected):
            log.warning("user file %s could not be parsed; skipped", f.where, exc_info=exc)
        return [(f.where, as_rejection(f.where, exc))]


def _skip(session: Session, report: UserSyncReport, source: str, where: str, exc: InputRejected, now: datetime) -> None:
    record_skip(session, state_kind="user", source_name=source, path=where, reason=exc.reason, detail=exc.detail, now=now)
    report.skipped += 1
    report.skipped_inputs.append({"path": where, "reason": exc.reason, "detail": exc.detail})


def _apply_snapshot(
    session: Session, source_name: str, snapshot: UserSnapshotInput, report: UserSyncReport, now: datetime
) -> None:
    user = session.get(UserRecord, snapshot.user_id)
    current = session.get(UserSnapshotVersion, user.current_version_id) if user and user.current_version_id else None
    if current is not None and current.content_hash == snapshot.content_hash:
        report.unchanged += 1
        return
    if user is None:
        user = UserRecord(user_id=snapshot.user_id, source_name=source_name, source_path=snapshot.source_path, first_seen=now)
        report.new += 1
    elif current is None:
        report.new += 1
    else:
        current.valid_to = now
        session.add(current)
        report.changed += 1
    version = UserSnapshotVersion(
        version_id=version_id_for(f"user:{snapshot.user_id}", snapshot.content_hash, now),
        user_id=snapshot.user_id,
        content_hash=snapshot.content_hash,
        captured_at=snapshot.captured_at,
        observed_at=now,
        valid_from=now,
        source_path=snapshot.source_path,
        facts=snapshot.facts,
        raw=snapshot.raw,
    )
    user.source_name, user.source_path = source_name, snapshot.source_path
    user.current_version_id, user.deleted_at = version.version_id, None
    session.add(user)
    session.add(version)
    session.flush()
    report.changed_user_ids.append(snapshot.user_id)


def _end_missing_users(
    session: Session,
    source_name: str,
    present: set[str],
    troubled_files: set[str],
    wanted: set[Path] | None,
    report: UserSyncReport,
    now: datetime,
) -> None:
    """A user is ended only when its file is gone, or parsed cleanly without it."""
    users = session.exec(
        select(UserRecord).where(UserRecord.source_name == source_name, col(UserRecord.current_version_id).is_not(None))
    ).all()
    for user in users:
        if user.user_id in present or user.source_path in troubled_files:
            continue
        if wanted is not None and Path(user.source_path).resolve() not in wanted:
            continue
        if wanted is not None and Path(user.source_path).exists():
            continue  # the file still exists; only a full scan may decide the user left it
        version = session.get(UserSnapshotVersion, user.current_version_id)
        if version is not None:
            version.valid_to = now
            session.add(version)
        user.current_version_id, user.deleted_at = None, now
        session.add(user)
        report.deleted += 1
        report.changed_user_ids.append(user.user_id)


def current_snapshot(session: Session, user_id: str) -> UserSnapshotVersion | None:
    user = session.get(UserRecord, user_id)
    if user is None or user.current_version_id is None:
        return None
    return session.get(UserSnapshotVersion, user.current_version_id)


def snapshot_age(snapshot: UserSnapshotVersion, now: datetime | None = None) -> timedelta:
    return (now or utcnow()) - snapshot.captured_at
