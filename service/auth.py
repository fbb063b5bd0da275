"""API keys: configured in ``freshcontext.yaml`` (``api_keys``) and/or ``FRESHCONTEXT_API_KEYS``.

Clients send ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. One ``KeyRing`` checks
every route (the JSON API, the webhook-free staff endpoints and the staff page): keys are
compared as bytes, in constant time, against every configured key, so timing reveals
neither which key matched nor a matching prefix, and a key with non-ASCII characters is
simply a wrong key, never a server error. Traces and logs carry a fingerprint (a sha256
prefix), never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from fastapi import Request

from context_store.settings import Settings
from service.errors import ApiError

__all__ = ["ENV_KEYS", "KeyRing", "fingerprint", "presented_key"]

ENV_KEYS = "FRESHCONTEXT_API_KEYS"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="freshcontext"'}


def _bytes(text: str) -> bytes:
    # surrogatepass: a form field or header can carry anything; it must compare unequal, not raise
    return text.encode("utf-8", "surrogatepass")


def fingerprint(key: str) -> str:
    return "key-" + hashlib.sha256(_bytes(key)).hexdigest()[:12]


def presented_key(request: Request) -> str | None:
    """The key in ``X-API-Key`` or ``Authorization: Bearer``, if any."""
    key = request.headers.get("x-api-key")
    if key is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        key = value.strip() if scheme.lower() == "bearer" and value.strip() else None
    return key or None


class KeyRing:
    """The configured keys, checked the same way by every route."""

    def __init__(self, keys: list[str]) -> None:
        self._keys = [_bytes(k) for k in dict.fromkeys(k.strip() for k in keys) if k]

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        env = [k for k in os.environ.get(ENV_KEYS, "").split(",") if k.strip()]
        return cls([*settings.api_keys, *env])

    def __len__(self) -> int:
        return len(self._keys)

    def matches(self, key: str | None) -> bool:
        """Whether ``key`` is one of the configured keys (compared with all of them, in constant time)."""
        if not key or not self._keys:
            return False
        given = _bytes(key)
        valid = False
        for k in self._keys:
            valid |= hmac.compare_digest(given, k)
        return valid

    def session_token(self, key: str) -> str:
        """What the staff page keeps in its cookie: derived from the key, never the key itself."""
        return hmac.new(_bytes(key), b"freshcontext-staff-session", hashlib.sha256).hexdigest()

    def matches_session(self, token: str | None) -> bool:
        """Whether ``token`` was made by ``session_token`` from a configured key (all compared)."""
        if not token or not self._keys:
            return False
        given = _bytes(token)
        valid = False
        for k in self._keys:
            valid |= hmac.compare_digest(given, _bytes(hmac.new(k, b"freshcontext-staff-session", hashlib.sha256).hexdigest()))
        return valid

    def check(self, request: Request) -> str:
        """The caller's key fingerprint, or a 401 saying what is missing."""
        if not self._keys:
            raise ApiError(401, "unauthorized", f"no API keys are configured on this server; set {ENV_KEYS} or api_keys in freshcontext.yaml", _CHALLENGE)
        key = presented_key(request)
        if not key:
            raise ApiError(401, "unauthorized", "missing API key: send the X-API-Key header or Authorization: Bearer <key>", _CHALLENGE)
        if not self.matches(key):
            raise ApiError(401, "unauthorized", "invalid API key", _CHALLENGE)
        return fingerprint(key)
