"""What is not retrievable yet, and what trails its source: the backlog a freshness report reads.

* ``unindexed_changes``: journal rows no path applied yet, and versions written but not yet
  committed to LanceDB;
* ``user_state_ages``: how old each current user snapshot is, against its maximum age;
* ``stalest_documents``: the current documents whose served text trails their source longest;
* ``reconciliation_diff``: what a full re-hash changed, and how much of it the journal missed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlmodel import Session, col, select

from context_store._common import as_utc, utcnow
from context_store.index.lag import previous_observed
from context_store.index.plan import pending_documents
from context_store.store.context_store import ContextStore
from context_store.store.database import in_batches
from context_store.store.models import ChangeEvent, Document, DocumentVersion, UserRecord, UserSnapshotVersion, VersionLag

__all__ = [
    "UnindexedChange",
    "UnindexedReport",
    "UserAgeReport",
    "reconciliation_diff",
    "stalest_documents",
    "unindexed_changes",
    "user_state_ages",
]


@dataclass
class UnindexedChange:
    state_kind: str
    what: str  # a path, a doc id or a user id
    since: datetime
    via: str  # journal | store


@dataclass
class UnindexedReport:
    count: int
    oldest_since: datetime | None
    oldest_age_s: float | None
    items: list[UnindexedChange] = field(default_factory=list)


def unindexed_changes(store: ContextStore, *, now: datetime | None = None) -> UnindexedReport:
    """Changes whose current text is not retrievable yet.

    Two places hold them: journal rows no path has applied yet (seen, not versioned), and
    versions written but not yet committed to LanceDB (versioned, not indexed).
    """
    now = now or utcnow()
    found: dict[tuple[str, str], UnindexedChange] = {}
    roots = {s.name: Path(s.path).resolve() for s in store.settings.company_sources}
    with store.session() as session:
        for kind, path, seen in session.exec(
            select(ChangeEvent.state_kind, ChangeEvent.path, func.min(ChangeEvent.seen_at))
            .where(col(ChangeEvent.applied_at).is_(None))
            .group_by(ChangeEvent.state_kind, ChangeEvent.path)
        ).all():
            found[(kind, path)] = UnindexedChange(kind, path, as_utc(seen), "journal")  # type: ignore[arg-type]
        for doc in pending_documents(session):
            version = session.get(DocumentVersion, doc.current_version_id) if doc.current_version_id else None
            since = version.observed_at if version else doc.deleted_at
            path = version.source_path if version else str(roots.get(doc.source_name, Path("?")) / doc.rel_path)
            item = UnindexedChange("company", path, as_utc(since) or now, "store")
            found.setdefault(("company", path), item)
        for user in session.exec(
            select(UserRecord).where(
                (col(UserRecord.current_version_id) != col(UserRecord.indexed_version_id))
                | (col(UserRecord.current_version_id).is_(None) & col(UserRecord.indexed_version_id).is_not(None))
                | (col(UserRecord.current_version_id).is_not(None) & col(UserRecord.indexed_version_id).is_(None))
            )
        ).all():
            version = session.get(UserSnapshotVersion, user.current_version_id) if user.current_version_id else None
            since = version.observed_at if version else user.deleted_at
            found.setdefault(("user", user.user_id), UnindexedChange("user", user.user_id, as_utc(since) or now, "store"))
    items = sorted(found.values(), key=lambda i: i.since)
    oldest = items[0].since if items else None
    return UnindexedReport(len(items), oldest, (now - oldest).total_seconds() if oldest else None, items)


@dataclass
class UserAgeReport:
    current: int
    max_age_hours: float
    stale: list[tuple[str, float]]  # (user_id, age in hours), oldest first
    oldest_age_hours: float | None


def user_state_ages(store: ContextStore, *, now: datetime | None = None, max_age_hours: float | None = None) -> UserAgeReport:
    now = now or utcnow()
    limit = store.settings.user_state_max_age_hours if max_age_hours is None else max_age_hours
    with store.session() as session:
        rows = session.exec(
            select(UserSnapshotVersion.user_id, UserSnapshotVersion.captured_at).join(
                UserRecord, col(UserRecord.current_version_id) == col(UserSnapshotVersion.version_id)
            )
        ).all()
    ages = sorted(((uid, (now - as_utc(cap)).total_seconds() / 3600) for uid, cap in rows), key=lambda x: -x[1])  # type: ignore[operator]
    return UserAgeReport(len(ages), limit, [a for a in ages if a[1] > limit], ages[0][1] if ages else None)


def stalest_documents(store: ContextStore, *, now: datetime | None = None, limit: int = 5) -> list[dict[str, Any]]:
    """Current documents whose served text trails (or trailed) their source the longest.

    A pending document trails by ``now − source change`` and counts as it stands; an indexed
    one by the lag recorded for its current version.
    """
    now = now or utcnow()
    rows: list[dict[str, Any]] = []
    with store.session() as session:
        for doc_id, lag, changed, committed in session.exec(
            select(Document.doc_id, VersionLag.lag_seconds, VersionLag.source_changed_at, VersionLag.committed_at)
            .join(VersionLag, col(VersionLag.version_id) == col(Document.current_version_id))
            .where(col(Document.indexed_version_id) == col(Document.current_version_id), col(VersionLag.backfill).is_(False))
            .order_by(col(VersionLag.lag_seconds).desc())
            .limit(limit)
        ).all():
            rows.append({"doc_id": doc_id, "state": "indexed", "lag_s": round(lag, 3), "source_changed_at": as_utc(changed), "committed_at": as_utc(committed)})
        for doc in pending_documents(session):
            version = session.get(DocumentVersion, doc.current_version_id) if doc.current_version_id else None
            changed = as_utc((version.source_mtime or version.observed_at) if version else doc.deleted_at) or now
            rows.append({"doc_id": doc.doc_id, "state": "pending", "lag_s": round((now - changed).total_seconds(), 3), "source_changed_at": changed, "committed_at": None})
    return sorted(rows, key=lambda r: -r["lag_s"])[:limit]


def reconciliation_diff(store: ContextStore, since: datetime) -> dict[str, Any]:
    """What a full re-hash that started at ``since`` changed, and how much of it the journal missed.

    A difference is a version written or a document/user ended since ``since``. It was
    *missed by the journal* when no journal row names its path between our previous look at
    it and now: the watcher was down, the mount gives no events, or someone edited behind us.
    """
    out: dict[str, Any] = {}
    missed: list[str] = []
    with store.session() as session:
        for kind, model, key_col, ended_model, ended_key in (
            ("company", DocumentVersion, DocumentVersion.doc_id, Document, Document.doc_id),
            ("user", UserSnapshotVersion, UserSnapshotVersion.user_id, UserRecord, UserRecord.user_id),
        ):
            fresh = session.exec(
                select(key_col, model.source_path, model.observed_at).where(col(model.observed_at) >= since)
            ).all()
            history = previous_observed(session, model, key_col, {k for k, _, _ in fresh})
            journaled = _journal_times(session, {str(Path(p).resolve()) for _, p, _ in fresh})

            def was_journaled(path: str, after: datetime | None) -> bool:
                return any(after is None or t >= after for t in journaled.get(str(Path(path).resolve()), []))

            new = changed = 0
            for key, path, observed in fresh:
                prior = [t for t in history.get(key, []) if t < as_utc(observed)]  # type: ignore[operator]
                new, changed = (new, changed + 1) if prior else (new + 1, changed)
                if not was_journaled(path, prior[-1] if prior else None):
                    missed.append(f"{kind}:{key}")
            ended = session.exec(
                select(ended_key).where(col(ended_model.deleted_at) >= since, col(ended_model.current_version_id).is_(None))
            ).all()
            out[f"{kind}_new"], out[f"{kind}_changed"], out[f"{kind}_deleted"] = new, changed, len(ended)
    out["differences"] = sum(v for k, v in out.items() if k.endswith(("_new", "_changed", "_deleted")))
    out["missed_by_journal"] = len(missed)
    out["missed_sample"] = missed[:20]
    return out


def _journal_times(session: Session, paths: set[str]) -> dict[str, list[datetime]]:
    out: dict[str, list[datetime]] = {}
    for part in in_batches(sorted(paths)):
        for path, seen in session.exec(
            select(ChangeEvent.path, ChangeEvent.seen_at).where(col(ChangeEvent.path).in_(part), ChangeEvent.event != "rescan")
        ).all():
            out.setdefault(path, []).append(as_utc(seen))  # type: ignore[arg-type]
    return out
