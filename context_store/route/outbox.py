"""The outbox: outbound notifications persisted first, then delivered with retries and backoff.

A message is written in the same transaction as the change it announces (a routed
question), so nothing is lost when the staff endpoint or this process is down. Delivery
signs each attempt the Standard Webhooks way: the same ``webhook-id`` on every attempt
(receivers de-duplicate on it), a fresh timestamp and signature each time.

Backoff is exponential (``base * 2**(attempt-1)``, capped) with deterministic jitter;
after ``outbound_max_attempts`` a message is ``dead`` and stays visible until someone
redelivers it. Before sending, a batch is *leased* (its ``next_attempt_at`` pushed past
the request timeout) so two workers never send the same message at the same time.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlmodel import Session, col, func, select

from context_store._common import utcnow
from context_store.errors import NotFound
from context_store.route.webhooks import new_webhook_id, sign_headers
from context_store.store.context_store import ContextStore
from context_store.store.models import OutboxMessage

__all__ = ["DeliveryReport", "OutboxWorker", "backoff_seconds", "deliver_due", "enqueue", "outbox_counts", "redeliver"]

log = logging.getLogger(__name__)


def enqueue(session: Session, event_type: str, url: str, payload: dict[str, Any], *, now: datetime | None = None) -> OutboxMessage:
    """Add a message inside the caller's transaction; it is sent only once that commits."""
    now = now or utcnow()
    message = OutboxMessage(
        message_id=new_webhook_id(), event_type=event_type, url=url,
        payload={"type": event_type, "timestamp": now.isoformat(), "data": payload},
        created_at=now, next_attempt_at=now,
    )
    session.add(message)
    return message


def backoff_seconds(attempt: int, base: float, cap: float, message_id: str = "") -> float:
    """Delay after failed attempt number ``attempt`` (1-based): exponential, capped, 50-100 % jitter."""
    raw = min(cap, base * (2 ** max(0, attempt - 1)))
    jitter = 0.5 + (zlib.crc32(f"{message_id}:{attempt}".encode()) % 1000) / 2000  # stable per message and attempt
    return raw * jitter


@dataclass
class DeliveryReport:
    attempted: int = 0
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _lease_due(store: ContextStore, now: datetime, limit: int, timeout: float) -> list[OutboxMessage]:
    """Take the due messages: each gets a lease (its next attempt moves past this one's timeout)."""
    with store.session() as session:
        due = list(session.exec(
            select(OutboxMessage)
            .where(OutboxMessage.status == "pending", col(OutboxMessage.next_attempt_at) <= now)
            .order_by(col(OutboxMessage.id))
            .limit(limit)
        ).all())
        for message in due:
            message.next_attempt_at = now + timedelta(seconds=timeout + 30)
            session.add(message)
    return due


def _send(client: httpx.Client, message: OutboxMessage, secrets: list[str]) -> tuple[int | None, str | None]:
    """POST one signed message; returns the HTTP status (if any) and the error (``None``: delivered)."""
    body = json.dumps(message.payload, separators=(",", ":"), sort_keys=True, default=str).encode()
    try:
        if not secrets:
            raise RuntimeError("no outbound webhook secret configured (routing.outbound_secrets)")
        headers = sign_headers(secrets, body, webhook_id=message.message_id).as_dict()
        response = client.post(message.url, content=body, headers={**headers, "content-type": "application/json"})
    except (httpx.HTTPError, RuntimeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if not 200 <= response.status_code < 300:
        return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"
    return response.status_code, None


def _record_attempt(
    store: ContextStore, message_id: int | None, status: int | None, error: str | None, report: DeliveryReport, *,
    max_attempts: int, backoff: float, backoff_cap: float,
) -> None:
    finished = utcnow()
    with store.session() as session:
        row = session.get(OutboxMessage, message_id)
        if row is None:
            return
        row.attempts += 1
        row.last_status = status
        if error is None:
            row.status, row.delivered_at, row.last_error = "delivered", finished, None
            report.delivered += 1
        else:
            row.last_error = error
            report.errors.append(f"{row.message_id}: {error}")
            if row.attempts >= max_attempts:
                row.status = "dead"
                report.dead += 1
                log.error("outbox message %s is dead after %d attempts: %s", row.message_id, row.attempts, error)
            else:
                row.next_attempt_at = finished + timedelta(seconds=backoff_seconds(row.attempts, backoff, backoff_cap, row.message_id))
                report.failed += 1
        session.add(row)


def deliver_due(
    store: ContextStore,
    *,
    secrets: list[str],
    client: httpx.Client | None = None,
    max_attempts: int = 10,
    backoff: float = 2.0,
    backoff_cap: float = 3600.0,
    timeout: float = 10.0,
    limit: int = 50,
    now: datetime | None = None,
) -> DeliveryReport:
    """Send every pending message that is due; returns what happened."""
    report = DeliveryReport()
    due = _lease_due(store, now or utcnow(), limit, timeout)
    if not due:
        return report
    own_client = client is None
    client = client or httpx.Client(timeout=timeout)
    try:
        for message in due:
            report.attempted += 1
            status, error = _send(client, message, secrets)
            _record_attempt(store, message.id, status, error, report, max_attempts=max_attempts, backoff=backoff, backoff_cap=backoff_cap)
    finally:
        if own_client:
            client.close()
    return report


def redeliver(store: ContextStore, message_id: str) -> None:
    """Put a dead (or delivered) message back in the queue, keeping its id so receivers can de-duplicate."""
    with store.session() as session:
        row = session.exec(select(OutboxMessage).where(OutboxMessage.message_id == message_id)).first()
        if row is None:
            raise NotFound(f"no outbox message {message_id!r}")
        row.status, row.attempts, row.next_attempt_at = "pending", 0, utcnow()
        session.add(row)


def outbox_counts(store: ContextStore) -> dict[str, int]:
    with store.session() as session:
        rows = session.exec(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all()
    return {"pending": 0, "delivered": 0, "dead": 0} | {s: int(n) for s, n in rows}


class OutboxWorker:
    """A daemon thread that calls ``deliver_due`` every ``interval`` seconds until stopped."""

    def __init__(self, store: ContextStore, *, interval: float = 1.0, **kwargs: Any) -> None:
        self.store = store
        self.interval = interval
        self.kwargs = kwargs
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="freshcontext-outbox", daemon=True)
            self._thread.start()

    def poke(self) -> None:
        """Deliver now rather than at the next tick (a question was just routed)."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                deliver_due(self.store, **self.kwargs)
            except Exception:  # a bad tick must not kill the worker; the next one retries
                log.exception("outbox delivery tick failed")
            self._wake.wait(self.interval)
            self._wake.clear()
