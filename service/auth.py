"""API keys: configured in ``freshcontext.yaml`` (``api_keys``) and/or ``FRESHCONTEXT_API_KEYS``.

Clients send ``X-API-Key: <key>`` or ``Authorization: Bearer <key>``. Keys are compared in
constant time; traces and logs carry a fingerprint (sha256 prefix), never the key.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from fastapi import Request

from context_store.settings import Settings
from service.errors import ApiError

__all__ = ["ENV_KEYS", "KeyRing", "fingerprint"]

ENV_KEYS = "FRESHCONTEXT_API_KEYS"


def fingerprint(key: str) -> str:
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:12]


class KeyRing:
    def __init__(self, keys: list[str]) -> None:
        self._keys = [k.encode() for k in dict.fromkeys(k.strip() for k in keys) if k]

    @classmethod
    def from_settings(cls, settings: Settings) -> "KeyRing":
        env = [k for k in os.environ.get(ENV_KEYS, "").split(",") if k.strip()]
        return cls([*settings.api_keys, *env])

    def __len__(self) -> int:
        return len(self._keys)

    def check(self, request: Request) -> str:
        """The caller's key fingerprint, or a 401 saying what is missing."""
        key = request.headers.get("x-api-key")
        if key is None:
            auth = request.headers.get("authorization", "")
            scheme, _, value = auth.partition(" ")
            key = value.strip() if scheme.lower() == "bearer" and value.strip() else None
        challenge = {"WWW-Authenticate": 'Bearer realm="freshcontext"'}
        if not self._keys:
            raise ApiError(401, "unauthorized", f"no API keys are configured on this server; set {ENV_KEYS} or api_keys in freshcontext.yaml", challenge)
        if not key:
            raise ApiError(401, "unauthorized", "missing API key: send the X-API-Key header or Authorization: Bearer <key>", challenge)
        given = key.encode()
        # Compare against every key so timing does not reveal which (or whether a prefix) matched.
        valid = False
        for k in self._keys:
            valid |= hmac.compare_digest(given, k)
        if not valid:
            raise ApiError(401, "unauthorized", "invalid API key", challenge)
        return fingerprint(key)
