"""A signed staff-answer stream for the load test, and the audit that nothing it delivered was lost.

During a load, ``run_stream`` plays a helpdesk: it reads the open routed questions (the
low-confidence ``/v1/retrieve`` calls of the load route them) from ``/v1/questions`` and
answers each once through the signed webhook (Standard Webhooks, as a real sender would),
round-robin over the replicas, at a bounded rate. It also sends ``bad_signatures``
deliveries signed with a secret the server does not hold: those must be refused (401) and
never stored.

``audit`` then compares what the senders were told with what the SQL store holds, by
webhook id: a delivery that got a 2xx must have its ``StaffAnswer`` and ``WebhookDelivery``
rows, and a refused one must have neither.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlmodel import col, select

from context_store.route.webhooks import generate_secret, new_webhook_id, sign_headers
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, StaffAnswer, WebhookDelivery

__all__ = ["Delivery", "StreamLog", "audit", "run_stream"]

WEBHOOK_PATH = "/v1/webhooks/staff-answer"


@dataclass
class Delivery:
    webhook_id: str
    question_id: str
    base: str
    status: int | None  # None: no response (transport error)
    bad_signature: bool = False
    error: str | None = None


@dataclass
class StreamLog:
    deliveries: list[Delivery] = field(default_factory=list)
    polls: int = 0
    poll_errors: int = 0
    seconds: float = 0.0

    @property
    def good(self) -> list[Delivery]:
        return [d for d in self.deliveries if not d.bad_signature]

    @property
    def bad(self) -> list[Delivery]:
        return [d for d in self.deliveries if d.bad_signature]


def _body(question_id: str, n: int) -> bytes:
    text = (
        f"Staff answer {n}: our support team checked this case by hand. "
        "If the help centre does not cover it, reply to this message and a person will follow up within one working day."
    )
    return json.dumps({"question_id": question_id, "answer": text, "author": f"load-staff-{n % 7}"}).encode()


async def run_stream(
    bases: list[str],
    api_key: str,
    secret: str,
    *,
    stop: asyncio.Event,
    rate: float = 1.0,
    max_answers: int = 500,
    bad_signatures: int = 2,
    poll_interval: float = 1.0,
    http: httpx.AsyncClient | None = None,
) -> StreamLog:
    """Answer open questions until ``stop`` is set or ``max_answers`` were sent; never more than ``rate`` per second."""
    started = time.monotonic()
    log = StreamLog()
    owned = http is None
    http = http or httpx.AsyncClient(timeout=30)
    targets = itertools.cycle(bases)
    sources = itertools.cycle(bases)
    tried: set[str] = set()
    wrong = generate_secret()  # a well-formed secret the server does not hold
    sent = 0
    try:
        while not stop.is_set() and sent < max_answers:
            try:
                r = await http.get(f"{next(sources)}/v1/questions", params={"status": "open", "limit": 100}, headers={"X-API-Key": api_key})
                r.raise_for_status()
                fresh = [q["question_id"] for q in r.json()["questions"] if q["question_id"] not in tried]
            except (httpx.HTTPError, KeyError, ValueError):
                log.poll_errors += 1
                fresh = []
            log.polls += 1
            for question_id in fresh:
                if stop.is_set() or sent >= max_answers:
                    break
                tried.add(question_id)
                # the forged deliveries go first, for questions still open: a refusal that
                # stored anyway would show as an answer with their webhook id
                if len(log.bad) < bad_signatures:
                    log.deliveries.append(await _deliver(http, next(targets), wrong, question_id, sent, bad=True))
                log.deliveries.append(await _deliver(http, next(targets), secret, question_id, sent, bad=False))
                sent += 1
                await _sleep_or_stop(stop, 1.0 / rate)
            if not fresh:
                await _sleep_or_stop(stop, poll_interval)
    finally:
        if owned:
            await http.aclose()
    log.seconds = time.monotonic() - started
    return log


async def _deliver(http: httpx.AsyncClient, base: str, secret: str, question_id: str, n: int, *, bad: bool) -> Delivery:
    raw = _body(question_id, n)
    headers = {**sign_headers(secret, raw, webhook_id=new_webhook_id()).as_dict(), "content-type": "application/json"}
    try:
        r = await http.post(f"{base}{WEBHOOK_PATH}", content=raw, headers=headers)
        error = None if r.is_success else r.text[:300]
        return Delivery(headers["webhook-id"], question_id, base, r.status_code, bad, error)
    except httpx.HTTPError as exc:
        return Delivery(headers["webhook-id"], question_id, base, None, bad, f"{type(exc).__name__}: {exc}")


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    except TimeoutError:
        pass


def audit(store: ContextStore, log: StreamLog) -> dict[str, Any]:
    """Posted (2xx) vs stored vs lost, and the forged deliveries refused vs stored (must be 0)."""
    ids = [d.webhook_id for d in log.deliveries]
    with store.session() as session:
        answers = dict(session.exec(select(StaffAnswer.webhook_id, StaffAnswer.doc_id).where(col(StaffAnswer.webhook_id).in_(ids))).all()) if ids else {}
        recorded = set(session.exec(select(WebhookDelivery.webhook_id).where(col(WebhookDelivery.webhook_id).in_(ids))).all()) if ids else set()
        docs = [doc for doc in answers.values() if doc]
        indexed = {
            doc_id for doc_id, current, done in session.exec(
                select(Document.doc_id, Document.current_version_id, Document.indexed_version_id).where(col(Document.doc_id).in_(docs))
            ).all() if current is not None and current == done
        } if docs else set()
    posted = [d for d in log.good if d.status is not None and 200 <= d.status < 300]
    stored = [d for d in posted if d.webhook_id in answers and d.webhook_id in recorded]
    stored_ids = {d.webhook_id for d in stored}
    lost = [d.webhook_id for d in posted if d.webhook_id not in stored_ids]
    unaccepted = [d for d in log.good if d.status is None or not 200 <= d.status < 300]
    statuses: dict[str, int] = {}
    for d in unaccepted:
        statuses[str(d.status)] = statuses.get(str(d.status), 0) + 1
    return {
        "posted": len(posted),
        "stored": len(stored),
        "lost": len(lost),
        "lost_ids": lost[:10],
        "indexed": sum(1 for d in stored if answers[d.webhook_id] in indexed),
        "not_accepted": statuses,  # good signatures that got no 2xx (e.g. 409 answered meanwhile); the sender would retry
        "not_accepted_samples": [d.error for d in unaccepted[:3]],
        "bad_signature_sent": len(log.bad),
        "bad_signature_refused": sum(1 for d in log.bad if d.status == 401),
        "bad_signature_stored": sum(1 for d in log.bad if d.webhook_id in answers or d.webhook_id in recorded),
        "polls": log.polls,
        "poll_errors": log.poll_errors,
        "measured": True,
    }
