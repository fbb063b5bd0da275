"""API keys and who holds them: one ``KeyRing`` resolves a presented key to a ``Principal`` (name, role).

Keys are configured in ``freshcontext.yaml`` (``api_keys: [{name: bot, key: ..., role: agent}]``)
and/or ``FRESHCONTEXT_API_KEYS`` (comma-separated ``name:role:key`` entries; a bare key is
read as an agent key, with a warning, like the old flat list). Clients send
``X-API-Key: <key>`` or ``Authorization: Bearer <key>``.

Keys are compared as sha256 digests, in constant time, against every configured key, so
timing reveals neither which key matched nor its length, and a key with non-ASCII
characters (a header, a form field, a cookie) is simply a wrong key, never a server error.
Traces and logs carry the key's name, never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from context_store.settings import ROLES, ApiKeyConfig, Settings, legacy_api_key

__all__ = ["ENV_KEYS", "ROLES", "KeyRing", "Principal", "digest", "presented_key", "refusal"]

ENV_KEYS = "FRESHCONTEXT_API_KEYS"
_NAMED_ENTRY = re.compile(r"^([^:\s]+):(agent|staff|admin):(.+)$")


def digest(secret: str) -> bytes:
    """A fixed-length digest of anything a client sent; ``surrogatepass``: it must compare unequal, not raise."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key's ``name`` and ``role``; ``via`` is ``key`` or ``session`` (the staff page)."""

    name: str
    role: str
    via: str = "key"

    def may(self, *roles: str) -> bool:
        """Whether this caller holds one of ``roles``; an admin holds every role."""
        return self.role == "admin" or self.role in roles


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key in ``X-API-Key`` or ``Authorization: Bearer``, if any (``headers``: a request's)."""
    key = headers.get("x-api-key")
    if key is None:
        scheme, _, value = (headers.get("authorization") or "").partition(" ")
        key = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return key.strip() if key else None


def refusal(keys: "KeyRing", key: str | None) -> str:
    """Why a caller without a valid key is refused, saying what to fix."""
    if not len(keys):
        return f"no API keys are configured on this server; set {ENV_KEYS} or api_keys in freshcontext.yaml"
    if not key:
        return "missing API key: send the X-API-Key header or Authorization: Bearer <key>"
    return "invalid API key"


def _env_keys() -> list[ApiKeyConfig]:
    keys = []
    for entry in (e.strip() for e in os.environ.get(ENV_KEYS, "").split(",")):
        if not entry:
            continue
        named = _NAMED_ENTRY.match(entry)
        keys.append(ApiKeyConfig(name=named[1], role=named[2], key=named[3]) if named else legacy_api_key(entry))
    return keys


class KeyRing:
    """The configured keys, checked the same way by every route."""

    def __init__(self, keys: Iterable[ApiKeyConfig]) -> None:
        by_name = {k.name: k for k in keys if k.key.strip()}  # a later entry (the environment) replaces one of the same name
        self._entries = [(digest(k.key.strip()), Principal(k.name, k.role)) for k in by_name.values()]

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        return cls([*settings.api_keys, *_env_keys()])

    def __len__(self) -> int:
        return len(self._entries)

    def resolve(self, key: str | None) -> Principal | None:
        """The holder of ``key``, or None; compared with every configured key, in constant time."""
        if not key:
            return None
        given = digest(key)
        found: Principal | None = None
        for stored, principal in self._entries:
            if hmac.compare_digest(given, stored):
                found = principal
        return found

    def holder(self, name: str) -> Principal | None:
        """The key named ``name`` as configured now (a staff session ends when its key is removed)."""
        return next((p for _, p in self._entries if p.name == name), None)
