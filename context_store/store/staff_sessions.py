"""Staff page sessions: opened at sign-in with a random id, looked up per request, closed at sign-out.

The id is 256 random bits the browser keeps in a cookie; the table keeps its sha256 (a
database dump yields no usable cookie). Rows that expired a day ago are deleted when a
new session opens, so the table stays as small as the set of people signed in.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlmodel import col, delete

from context_store._common import utcnow
from context_store.store.context_store import ContextStore
from context_store.store.models import StaffSession

__all__ = ["close_staff_session", "find_staff_session", "open_staff_session"]

_KEEP_EXPIRED = timedelta(days=1)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


def open_staff_session(
    store: ContextStore, key_name: str, role: str, *, hours: float, client: str | None = None, now: datetime | None = None
) -> str:
    """A new session for the holder of ``key_name``; returns the id the browser keeps (never stored)."""
    now = now or utcnow()
    session_id = secrets.token_urlsafe(32)
    with store.session() as session:
        session.exec(delete(StaffSession).where(col(StaffSession.expires_at) < now - _KEEP_EXPIRED))  # type: ignore[call-overload]
        session.add(StaffSession(session_hash=_hash(session_id), key_name=key_name, role=role, created_at=now,
                                 expires_at=now + timedelta(hours=hours), client=client))
    return session_id


def find_staff_session(store: ContextStore, session_id: str | None, *, now: datetime | None = None) -> StaffSession | None:
    """The live session with this id: not expired, not signed out; None otherwise."""
    if not session_id or len(session_id) > 128:
        return None
    with store.session() as session:
        found = session.get(StaffSession, _hash(session_id))
    if found is None or found.revoked_at is not None or found.expires_at <= (now or utcnow()):
        return None
    return found


def close_staff_session(store: ContextStore, session_id: str | None, *, now: datetime | None = None) -> bool:
    """Sign out: the id stops working at once, on every replica (they all read this table)."""
    if not session_id or len(session_id) > 128:
        return False
    with store.session() as session:
        found = session.get(StaffSession, _hash(session_id))
        if found is None or found.revoked_at is not None:
            return False
        found.revoked_at = now or utcnow()
        session.add(found)
    return True
