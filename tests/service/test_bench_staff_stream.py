"""bench/staff_stream.py against the real app (in-process ASGI): answers delivered, audited, forgeries refused."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from bench.staff_stream import Delivery, audit, run_stream
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.retrieve.retriever import retrieve
from context_store.route.decision import Reason
from context_store.route.questions import route_question
from context_store.route.webhooks import generate_secret
from context_store.store.context_store import ContextStore
from service.app import create_app
from tests.conftest import open_with_staff_answers

SECRET = generate_secret()
API_KEY = "stream-key"
QUESTIONS = [
    "Can I return a lamp after 40 days?",
    "Do you ship to Iceland?",
    "Is there a store in Oslo?",
    "Can I pay with a cheque?",
    "Will my warranty cover water damage?",
]


@pytest.fixture
def kb(sources: dict[str, Path], fake_embedder: HashingEmbedder) -> ContextStore:
    store = open_with_staff_answers(
        sources,
        api_keys=[{"name": "maria", "key": API_KEY, "role": "staff"}],
        routing={"webhook_secrets": [SECRET]},
    )
    ingest(store, fake_embedder)
    for text in QUESTIONS:
        result = retrieve(store, fake_embedder, text)
        route_question(store, result, [Reason("low_confidence", "test", 0.1)], vector=fake_embedder.encode([text])[0], model=fake_embedder.name)
    return store


def _stream(kb: ContextStore, embedder: HashingEmbedder, **kwargs):  # type: ignore[no-untyped-def]
    app = create_app(store=kb, embedder=embedder)
    app.state.embedder = embedder

    async def go():  # type: ignore[no-untyped-def]
        # the app in-process: its background tasks (the warm path) finish before each response returns
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=30) as http:
            return await run_stream(["http://replica-a", "http://replica-b"], API_KEY, SECRET, stop=asyncio.Event(), http=http, **kwargs)

    return asyncio.run(go())


def test_every_answer_posted_is_stored_and_forgeries_are_refused(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    log = _stream(kb, fake_embedder, rate=100.0, max_answers=len(QUESTIONS), bad_signatures=2)
    assert {d.base for d in log.good} == {"http://replica-a", "http://replica-b"}  # round-robin
    report = audit(kb, log)
    assert report["posted"] == report["stored"] == len(QUESTIONS) and report["lost"] == 0
    assert report["indexed"] == len(QUESTIONS)  # the warm path made each one retrievable
    assert report["bad_signature_sent"] == report["bad_signature_refused"] == 2 and report["bad_signature_stored"] == 0
    assert report["not_accepted"] == {}


def test_audit_counts_a_delivery_acknowledged_but_not_stored_as_lost(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    log = _stream(kb, fake_embedder, rate=100.0, max_answers=2, bad_signatures=0)
    log.deliveries.append(Delivery("msg_never_arrived", "q-x", "http://replica-a", 200))
    report = audit(kb, log)
    assert report["posted"] == 3 and report["stored"] == 2 and report["lost"] == 1 and report["lost_ids"] == ["msg_never_arrived"]
