"""The HTTP edge (issue 16, classes 6 and 8): the key before the body, body limits, valid Unicode,
one JSON error shape for every status (500 included), and 4xx for odd but well-formed input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.retrieve.retriever import retrieve
from context_store.route.decision import Reason
from context_store.route.questions import route_question
from context_store.store.context_store import ContextStore
from service.app import create_app
from service.routes import ROUTERS
from tests.conftest import open_with_staff_answers

KEYS = [{"name": "bot", "key": "agent-key", "role": "agent"}, {"name": "maria", "key": "staff-key", "role": "staff"},
        {"name": "ops", "key": "admin-key", "role": "admin"}]
AGENT, STAFF, ADMIN = ({"X-API-Key": k["key"]} for k in KEYS)
MIB = 1024 * 1024


@pytest.fixture
def kb(sources: dict[str, Path]) -> ContextStore:
    store = open_with_staff_answers(sources, api_keys=KEYS, routing={"webhook_secrets": ["whsec_" + "A" * 32]})
    ingest(store, HashingEmbedder())
    return store


@pytest.fixture
def app(kb: ContextStore) -> FastAPI:
    return create_app(store=kb, embedder=HashingEmbedder(), warm_up=False)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def _question(kb: ContextStore) -> str:
    emb = HashingEmbedder()
    text = "Can I return a lamp after 40 days?"
    result = retrieve(kb, emb, text, user_id="u-1")
    return route_question(kb, result, [Reason("low_confidence", "t", 0.1)], vector=emb.encode([text])[0], model=emb.name).question_id


def _asgi(app: FastAPI, path: str, headers: dict[str, str], chunks: int, chunk: bytes) -> tuple[int, dict[str, Any], int]:
    """POST ``chunks`` pieces of ``chunk`` straight to the ASGI app; returns status, JSON body and bytes it pulled."""
    pulled, sent = 0, 0
    status, body = 0, bytearray()

    async def receive() -> dict[str, Any]:
        nonlocal pulled, sent
        if sent >= chunks:
            await asyncio.sleep(3600)  # the client waits for a response
        sent += 1
        pulled += len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": sent < chunks}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body.extend(message.get("body", b""))

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "", "client": ("127.0.0.9", 5000),
        "server": ("testserver", 80), "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 60))
    return status, json.loads(body), pulled


def test_a_100_mb_body_without_a_key_is_refused_before_a_byte_of_it_is_read(app: FastAPI) -> None:
    piece = b" " * MIB  # 100 pieces of 1 MiB, one buffer: the test itself stays small
    streamed = {"content-type": "application/json", "transfer-encoding": "chunked"}
    status, body, pulled = _asgi(app, "/v1/retrieve", streamed, 100, piece)
    assert (status, body["error"]["code"], pulled) == (401, "unauthorized", 0)
    declared = {"content-type": "application/json", "content-length": str(100 * MIB)}
    status, body, pulled = _asgi(app, "/v1/questions/q-x/answer", {**declared, "x-api-key": "wrong"}, 100, piece)
    assert (status, body["error"]["code"], pulled) == (401, "unauthorized", 0)
    # with a valid key: a declared size over the limit is refused unread, a streamed one at the limit
    status, body, pulled = _asgi(app, "/v1/retrieve", {**declared, **AGENT}, 100, piece)
    assert (status, body["error"]["code"], pulled) == (413, "body_too_large", 0)
    status, body, pulled = _asgi(app, "/v1/retrieve", {**streamed, **AGENT}, 100, piece)
    assert (status, body["error"]["code"]) == (413, "body_too_large") and pulled <= 2 * MIB


def test_every_route_that_takes_a_body_has_a_limit(client: TestClient, kb: ContextStore) -> None:
    qid = _question(kb)
    client.post("/staff/login", data={"api_key": "staff-key"})
    big = b'{"pad": "' + b"x" * (70 * 1024) + b'"}'
    posts = [r.path for router in ROUTERS for r in router.routes if "POST" in r.methods]  # type: ignore[attr-defined]
    assert len(posts) >= 9
    for template in posts:
        path = template.replace("{question_id}", qid)
        r = client.post(path, content=big, headers={**ADMIN, "content-type": "application/json"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large", (path, r.status_code, r.text[:200])
    kb.settings.service.max_body_bytes = 200 * 1024  # configurable
    assert client.post("/v1/retrieve", content=big, headers={**AGENT, "content-type": "application/json"}).status_code == 400


@pytest.mark.parametrize(
    "raw",
    [
        b'{"query": "refund window \\ud800"}',
        b'{"query": "refund window", "user_id": "u-1\\udfff"}',
        b'{"query": "refund window", "filters": {"doc_ids": ["\\ud83d"]}}',
        b'{"query": "refund \xff\xfe window"}',
        b'{"query": "refund \xed\xa0\x80 window"}',  # a surrogate encoded as UTF-8 bytes: not UTF-8
    ],
)
def test_text_that_is_not_valid_unicode_is_a_400_at_the_edge(client: TestClient, raw: bytes) -> None:
    r = client.post("/v1/retrieve", content=raw, headers={**AGENT, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_unicode", r.text
    paired = client.post("/v1/retrieve", content=b'{"query": "refund window \\ud83d\\ude00"}', headers={**AGENT, "content-type": "application/json"})
    assert paired.status_code == 200  # a proper pair (an emoji) is text


def test_an_unexpected_error_is_a_500_in_the_json_error_shape_without_internals(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.routes.retrieve as route

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("connection to postgres://admin:hunter2@db failed")

    monkeypatch.setattr(route, "respond", broken)
    r = client.post("/v1/retrieve", json={"query": "refund"}, headers=AGENT)
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    assert error["code"] == "internal_error" and "error id" in error["message"] and "hunter2" not in r.text


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("post", "/v1/retrieve", {"json": {"query": "refund", "as_of": "0001-01-01T00:00:00+01:00"}}),
        ("post", "/v1/retrieve", {"json": {"query": "refund", "as_of": "9999-12-31T23:59:59-01:00"}}),
        ("get", "/v1/documents/company/refunds.md/versions?as_of=0001-01-01T00:30:00%2B01:00", {}),
        ("get", "/v1/questions?offset=1000000000000000000000000000000", {}),
        ("get", "/v1/questions?offset=-1", {}),
        ("get", "/v1/questions?limit=1000000000000000000000000000000", {}),
    ],
)
def test_odd_but_well_formed_input_is_a_4xx(client: TestClient, method: str, path: str, kwargs: dict[str, Any]) -> None:
    r = getattr(client, method)(path, headers=ADMIN, **kwargs)
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"] == "invalid_request", (path, r.status_code, r.text)


def test_non_ascii_credentials_are_wrong_credentials_not_errors(client: TestClient, kb: ContextStore) -> None:
    for value in ("agent-kéy".encode(), "ключ".encode(), b"\xff\xfe"):
        r = client.post("/v1/retrieve", json={"query": "refund"}, headers={"X-API-Key": value})  # type: ignore[dict-item]
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
        r = client.get("/staff", headers={"cookie": b"freshcontext_staff=" + value}, follow_redirects=False)  # type: ignore[dict-item]
        assert r.status_code == 303
    assert client.post("/staff/login", data={"api_key": "staff-kéy"}, follow_redirects=False).status_code == 303
    qid = _question(kb)
    client.post("/staff/login", data={"api_key": "staff-key"})
    r = client.post(f"/staff/questions/{qid}/answer", data={"answer": "x", "author": "y", "csrf": "jeton-forgé-é"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "bad_csrf_token"


def test_one_malformed_question_among_concurrent_ones_fails_alone(kb: ContextStore) -> None:
    """Class 2 over HTTP: questions coalesced into one encoder batch; a tokenizer that refuses an
    unpaired surrogate (as the real one does, for the whole batch) must not fail the others."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from context_store.index.embed import CoalescingEncoder

    class TokenizerLike(HashingEmbedder):
        def encode(self, texts):  # type: ignore[no-untyped-def]
            time.sleep(0.03)  # long enough for the next requests to queue into one batch
            if any(t != t.encode("utf-8", "replace").decode("utf-8") for t in texts):
                raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
            return super().encode(texts)

    encoder = CoalescingEncoder(TokenizerLike())
    app = create_app(store=kb, embedder=encoder, warm_up=False)  # type: ignore[arg-type]
    start = threading.Barrier(12)
    with TestClient(app, raise_server_exceptions=False) as c:
        def ask(i: int) -> int:
            raw = b'{"query": "refund window \\ud800"}' if i == 5 else json.dumps({"query": f"refund window {i}"}).encode()
            start.wait(5)
            return c.post("/v1/retrieve", content=raw, headers={**AGENT, "content-type": "application/json"}).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(ask, range(12)))
    assert codes[5] == 400 and [c for i, c in enumerate(codes) if i != 5] == [200] * 11
