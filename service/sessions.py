"""Staff page sign-in: who a session cookie belongs to, and the limit on failed sign-ins.

A session is a random id (``context_store.store.staff_sessions``) bound to the name of the
key that signed in; it is honoured only while that key is still configured with the staff
or admin role, so removing a key from the config ends its sessions at once. Failed
sign-ins are counted per client address in a sliding window; past the limit every attempt
from that address gets 429 until the window has passed (per process: with several
replicas the limit applies to each).
"""

from __future__ import annotations

import threading
import time
from collections import deque

from context_store.store import ContextStore, find_staff_session
from service.auth import KeyRing, Principal

__all__ = ["SESSION_COOKIE", "STAFF_ROLES", "LoginLimiter", "session_principal"]

SESSION_COOKIE = "freshcontext_staff"
STAFF_ROLES = ("staff", "admin")


def session_principal(store: ContextStore, keys: KeyRing, session_id: str | None) -> Principal | None:
    """The staff member behind a session cookie, or None (unknown, expired, signed out, key gone)."""
    found = find_staff_session(store, session_id)
    if found is None:
        return None
    holder = keys.holder(found.key_name)
    if holder is None or holder.role not in STAFF_ROLES:
        return None
    return Principal(holder.name, holder.role, via="session")


class LoginLimiter:
    """At most ``attempts`` failed sign-ins per client address in ``window`` seconds."""

    def __init__(self, attempts: int, window: float) -> None:
        self.attempts = attempts
        self.window = window
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.setdefault(client, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, client: str) -> float | None:
        """Seconds until ``client`` may try again, or None when it may try now."""
        now = time.monotonic()
        with self._lock:
            failures = self._recent(client, now)
            if len(failures) < self.attempts:
                return None
            return max(1.0, failures[0] + self.window - now)

    def failed(self, client: str) -> None:
        now = time.monotonic()
        with self._lock:
            self._recent(client, now).append(now)
            if len(self._failures) > 10_000:  # bounded: forget addresses whose window has passed
                self._failures = {c: f for c, f in self._failures.items() if f and f[-1] > now - self.window}

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)
