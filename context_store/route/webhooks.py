"""Standard Webhooks signing and verification (https://www.standardwebhooks.com).

The signed content is ``{webhook-id}.{webhook-timestamp}.{raw body}``; the signature is
``v1,`` + base64(HMAC-SHA256(key, content)) where the key is the base64 part of a
``whsec_<base64>`` secret. A ``webhook-signature`` header may carry several space-separated
signatures, and a receiver may hold several secrets, so a secret can be rotated without
a window in which deliveries fail.

Verification works on the raw bytes (never a re-serialised body) and compares in constant
time. Every failure is a ``WebhookRejected`` with a stable ``reason`` code that the HTTP
layer maps to a specific 4xx.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as _secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from context_store.errors import ConfigError, WebhookRejected
from context_store.store.context_store import ContextStore
from context_store.store.models import WebhookDelivery

__all__ = [
    "DEFAULT_TOLERANCE_SECONDS",
    "SECRET_PREFIX",
    "SignedHeaders",
    "decode_secret",
    "generate_secret",
    "new_webhook_id",
    "processed_delivery",
    "sign",
    "sign_headers",
    "verify",
]

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_SECONDS = 300


@dataclass(frozen=True)
class SignedHeaders:
    webhook_id: str
    timestamp: int
    signature: str

    def as_dict(self) -> dict[str, str]:
        return {"webhook-id": self.webhook_id, "webhook-timestamp": str(self.timestamp), "webhook-signature": self.signature}


def generate_secret(nbytes: int = 24) -> str:
    """A fresh ``whsec_`` secret (24 random bytes, as the reference libraries generate)."""
    return SECRET_PREFIX + base64.b64encode(_secrets.token_bytes(nbytes)).decode()


def new_webhook_id() -> str:
    return "msg_" + _secrets.token_urlsafe(18)


def decode_secret(secret: str) -> bytes:
    """The HMAC key of a ``whsec_<base64>`` secret; the prefix is optional, as in the reference libraries."""
    raw = secret.strip().removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"webhook secret {secret[:10]}…: not whsec_ followed by base64 ({exc})") from exc
    if len(key) < 16:
        raise ConfigError(f"webhook secret {secret[:10]}…: the key is {len(key)} bytes; use at least 16")
    return key


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """One ``v1,<base64>`` signature of ``id.timestamp.body``."""
    content = webhook_id.encode() + b"." + str(int(timestamp)).encode() + b"." + body
    digest = hmac.new(decode_secret(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def sign_headers(secret: str | Iterable[str], body: bytes, *, webhook_id: str | None = None, timestamp: int | None = None) -> SignedHeaders:
    """Headers for one delivery; with several secrets, one signature per secret (rotation on the sender's side)."""
    chosen = [secret] if isinstance(secret, str) else list(secret)
    if not chosen:
        raise ConfigError("no webhook secret to sign with")
    webhook_id = webhook_id or new_webhook_id()
    timestamp = int(time.time()) if timestamp is None else int(timestamp)
    signature = " ".join(sign(s, webhook_id, timestamp, body) for s in chosen)
    return SignedHeaders(webhook_id, timestamp, signature)


def verify(
    secrets: Iterable[str],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float | None = None,
    tolerance: int = DEFAULT_TOLERANCE_SECONDS,
) -> tuple[str, int]:
    """Check a delivery; returns ``(webhook_id, timestamp)`` or raises ``WebhookRejected``.

    ``headers`` must be case-insensitive or lower-case keyed (Starlette's are). The
    timestamp is checked before any HMAC so a replay of an old capture costs nothing.
    """
    keys = [decode_secret(s) for s in secrets]
    if not keys:
        raise WebhookRejected("not_configured", "no staff webhook secret is configured on this server", 503)
    webhook_id = (headers.get("webhook-id") or "").strip()
    raw_ts = (headers.get("webhook-timestamp") or "").strip()
    raw_sig = (headers.get("webhook-signature") or "").strip()
    missing = [n for n, v in (("webhook-id", webhook_id), ("webhook-timestamp", raw_ts), ("webhook-signature", raw_sig)) if not v]
    if missing:
        raise WebhookRejected("missing_headers", f"missing header(s): {', '.join(missing)}", 400)
    if len(webhook_id) > 256:
        raise WebhookRejected("bad_webhook_id", "webhook-id is longer than 256 characters", 400)
    try:
        timestamp = int(raw_ts)
    except ValueError:
        raise WebhookRejected("bad_timestamp", f"webhook-timestamp {raw_ts[:40]!r} is not integer seconds since the epoch", 400) from None
    now = time.time() if now is None else now
    if timestamp < now - tolerance:
        raise WebhookRejected("timestamp_too_old", f"webhook-timestamp is {int(now - timestamp)} s old; the tolerance is {tolerance} s", 401)
    if timestamp > now + tolerance:
        raise WebhookRejected("timestamp_in_future", f"webhook-timestamp is {int(timestamp - now)} s in the future; the tolerance is {tolerance} s", 401)
    content = webhook_id.encode() + b"." + str(timestamp).encode() + b"." + body
    expected = [hmac.new(k, content, hashlib.sha256).digest() for k in keys]
    for candidate in raw_sig.split():
        version, _, value = candidate.partition(",")
        if version != "v1" or not value:
            continue  # other schemes (v1a asymmetric) are allowed in the header; we only verify v1
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(given, e) for e in expected):
            return webhook_id, timestamp
    raise WebhookRejected("bad_signature", "no v1 signature in webhook-signature matches any configured secret", 401)


def processed_delivery(store: ContextStore, webhook_id: str) -> WebhookDelivery | None:
    """The record of a delivery this server already processed (recorded with the answer it carried)."""
    with store.session() as session:
        return session.get(WebhookDelivery, webhook_id)
