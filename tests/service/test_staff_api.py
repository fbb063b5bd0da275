"""The staff webhook and routed-question endpoints through FastAPI's TestClient."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.retrieve.retriever import retrieve
from context_store.route.decision import Reason
from context_store.route.questions import get_question, route_question
from context_store.route.webhooks import generate_secret, sign_headers
from context_store.store.context_store import ContextStore
from context_store.store.models import StaffAnswer, WebhookDelivery
from service.app import create_app
from tests.conftest import open_with_staff_answers

OLD, NEW = generate_secret(), generate_secret()
API_KEY = "staff-key-123"


@pytest.fixture
def kb(sources: dict[str, Path], fake_embedder: HashingEmbedder) -> ContextStore:
    store = open_with_staff_answers(
        sources,
        api_keys=[{"name": "maria", "key": API_KEY, "role": "staff"}],
        routing={"webhook_secrets": [OLD, NEW], "max_webhook_body_bytes": 4096},
    )
    ingest(store, fake_embedder)
    return store


@pytest.fixture
def client(kb: ContextStore, fake_embedder: HashingEmbedder) -> TestClient:
    app = create_app(store=kb, embedder=fake_embedder)
    app.state.embedder = fake_embedder
    return TestClient(app)


def routed(kb: ContextStore, emb: HashingEmbedder, text: str = "Can I return a lamp after 40 days?") -> str:
    result = retrieve(kb, emb, text, user_id="u-1")
    return route_question(kb, result, [Reason("low_confidence", "t", 0.1)], vector=emb.encode([text])[0], model=emb.name).question_id


def post(client: TestClient, body: bytes | dict, *, secret: str = NEW, webhook_id: str | None = None, ts: int | None = None, hdrs: dict | None = None):  # type: ignore[no-untyped-def]
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signed = sign_headers(secret, raw, webhook_id=webhook_id, timestamp=ts).as_dict()
    return client.post("/v1/webhooks/staff-answer", content=raw, headers={**signed, "content-type": "application/json", **(hdrs or {})})


def answers(kb: ContextStore) -> int:
    with kb.session() as s:
        return s.exec(select(func.count()).select_from(StaffAnswer)).one()


def test_signed_answer_is_stored_indexed_and_replays_are_refused(client: TestClient, kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    qid = routed(kb, fake_embedder)
    body = {"question_id": qid, "answer": "Yes, lamps get store credit up to 60 days.", "author": "maria"}
    r = post(client, body, secret=OLD, webhook_id="msg_1")  # the old secret still works during rotation
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "stored" and r.json()["doc_id"] == f"staff/{qid}.md"
    q = get_question(kb, qid)
    assert q["status"] == "answered" and q["answer"]["author"] == "maria" and q["answer"]["retrievable_at"]  # background task ran
    top = retrieve(kb, fake_embedder, "Can I return a lamp after 40 days?").results[0]
    assert top.kind == "staff_answer" and "store credit" in top.text
    # the same delivery again (a sender retry, even much later): 409, nothing stored twice
    again = post(client, body, webhook_id="msg_1")
    assert again.status_code == 409 and again.json()["error"]["code"] == "duplicate_delivery"
    assert again.json()["error"]["details"]["original"]["question_id"] == qid
    # a new delivery answering the same question: 409 already answered
    second = post(client, {**body, "answer": "No."}, webhook_id="msg_2")
    assert second.status_code == 409 and second.json()["error"]["code"] == "already_answered"
    assert answers(kb) == 1
    with kb.session() as s:
        assert s.get(WebhookDelivery, "msg_1") is not None and s.get(WebhookDelivery, "msg_2") is None


@pytest.mark.parametrize(
    ("case", "status", "error"),
    [
        ("bad_signature", 401, "bad_signature"),
        ("unknown_secret", 401, "bad_signature"),
        ("stale_timestamp", 401, "timestamp_too_old"),
        ("future_timestamp", 401, "timestamp_in_future"),
        ("missing_headers", 400, "missing_headers"),
        ("invalid_json", 400, "invalid_json"),
        ("not_an_object", 422, "invalid_body"),
        ("missing_field", 422, "invalid_body"),
        ("unknown_question", 404, "unknown_question"),
        ("oversized", 413, "body_too_large"),
    ],
)
def test_bad_deliveries_get_specific_errors_and_store_nothing(
    client: TestClient, kb: ContextStore, fake_embedder: HashingEmbedder, case: str, status: int, error: str
) -> None:
    qid = routed(kb, fake_embedder)
    good = {"question_id": qid, "answer": "An answer.", "author": "maria"}
    now = int(time.time())
    if case == "bad_signature":
        raw = json.dumps(good).encode()
        hdrs = sign_headers(NEW, raw).as_dict()
        r = client.post("/v1/webhooks/staff-answer", content=raw + b" ", headers=hdrs)
    elif case == "unknown_secret":
        r = post(client, good, secret=generate_secret())
    elif case == "stale_timestamp":
        r = post(client, good, ts=now - 301)
    elif case == "future_timestamp":
        r = post(client, good, ts=now + 400)
    elif case == "missing_headers":
        r = client.post("/v1/webhooks/staff-answer", json=good)
    elif case == "invalid_json":
        r = post(client, b'{"question_id": ')
    elif case == "not_an_object":
        r = post(client, b'["a"]')
    elif case == "missing_field":
        r = post(client, {"question_id": qid, "answer": "x"})
    elif case == "unknown_question":
        r = post(client, {**good, "question_id": "q-doesnotexist"})
    else:
        r = post(client, {**good, "answer": "x" * 5000})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == error and r.json()["error"]["message"]
    assert answers(kb) == 0 and get_question(kb, qid)["status"] == "open"
    # and the same question can still be answered properly afterwards
    assert post(client, good).status_code == 200


def test_webhook_without_secrets_is_unavailable(sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    store = ContextStore.open(sources["home"], company_sources=[{"name": "company", "path": str(sources["company"])}])
    client = TestClient(create_app(store=store))
    r = post(client, {"question_id": "q", "answer": "a", "author": "b"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "not_configured"


def test_question_endpoints_need_the_api_key_and_follow_the_lifecycle(client: TestClient, kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    qid = routed(kb, fake_embedder)
    assert client.get("/v1/questions").status_code == 401
    auth = {"x-api-key": API_KEY}
    listed = client.get("/v1/questions", headers=auth).json()["questions"]
    assert [q["question_id"] for q in listed] == [qid] and listed[0]["context"]
    assert client.get("/v1/questions/q-missing", headers=auth).status_code == 404
    assert client.post(f"/v1/questions/{qid}/assign", json={"owner": "maria"}, headers=auth).json()["owner"] == "maria"
    assert client.post(f"/v1/questions/{qid}/close", json={}, headers=auth).status_code == 409
    r = client.post(f"/v1/questions/{qid}/answer", json={"answer": "Store credit.", "author": "maria"}, headers={"authorization": f"Bearer {API_KEY}"})
    assert r.status_code == 200 and r.json()["answer_id"].startswith("a-")
    assert client.post(f"/v1/questions/{qid}/answer", json={"answer": "again", "author": "x"}, headers=auth).status_code == 409
    assert client.post(f"/v1/questions/{qid}/close", json={"note": "ok"}, headers=auth).json()["status"] == "closed"
    assert client.get("/v1/questions?status=all", headers=auth).json()["questions"][0]["status"] == "closed"
    assert client.get("/v1/questions?status=bogus", headers=auth).status_code == 400  # one error table: InvalidRequest is 400 everywhere
    metrics = client.get("/v1/learning", headers=auth).json()
    assert metrics["answers"] == 1 and metrics["answers_retrievable"] == 1 and "outbox" in metrics


def test_embedder_down_when_the_answer_arrives(client: TestClient, kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    qid = routed(kb, fake_embedder)

    class Down(HashingEmbedder):
        def encode(self, texts):  # type: ignore[no-untyped-def]
            raise RuntimeError("embedding service unavailable")

    client.app.state.embedder = Down()  # type: ignore[attr-defined]
    r = post(client, {"question_id": qid, "answer": "Lamps: store credit until day 60.", "author": "maria"})
    assert r.status_code == 200  # stored; indexing failed in the background and is retried by the next ingest
    q = get_question(kb, qid)
    assert q["status"] == "answered" and q["answer"]["retrievable_at"] is None
    ingest(kb, fake_embedder)
    from context_store.learn.review import mark_retrievable

    assert mark_retrievable(kb) == [q["answer"]["answer_id"]]


def test_api_process_delivers_the_outbox(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    """With routing.outbound_url set, the app's lifespan runs the outbox worker."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from context_store.route.outbox import outbox_counts
    from context_store.route.webhooks import verify

    got: list[tuple[dict, bytes]] = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            got.append(({k.lower(): v for k, v in self.headers.items()}, self.rfile.read(int(self.headers["content-length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    out_secret = generate_secret()
    kb.settings.routing = {**kb.settings.routing, "outbound_url": f"http://127.0.0.1:{server.server_port}/", "outbound_secrets": [out_secret]}
    try:
        app = create_app(store=kb, embedder=fake_embedder)
        app.state.embedder = fake_embedder
        with TestClient(app):
            qid = routed(kb, fake_embedder)
            deadline = time.time() + 15
            while not got and time.time() < deadline:
                time.sleep(0.1)
        assert got, "the outbox worker delivered nothing"
        verify([out_secret], got[0][0], got[0][1])
        assert json.loads(got[0][1])["data"]["question_id"] == qid
        assert outbox_counts(kb)["delivered"] == 1
    finally:
        server.shutdown()


def test_concurrent_duplicate_deliveries_store_one_answer(client: TestClient, kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    from concurrent.futures import ThreadPoolExecutor

    qid = routed(kb, fake_embedder)
    raw = json.dumps({"question_id": qid, "answer": "Store credit until day 60.", "author": "maria"}).encode()
    headers = {**sign_headers(NEW, raw, webhook_id="msg_race").as_dict(), "content-type": "application/json"}
    with ThreadPoolExecutor(4) as pool:
        codes = sorted(pool.map(lambda _: client.post("/v1/webhooks/staff-answer", content=raw, headers=headers).status_code, range(4)))
    assert codes == [200, 409, 409, 409]
    assert answers(kb) == 1


def test_a_burst_of_answers_runs_one_indexing_pass_at_a_time(
    client: TestClient, kb: ContextStore, fake_embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from context_store.index import warm

    real = warm.apply_company_paths
    active, peak, passes, guard = [0], [0], [], threading.Lock()

    def counting(store, embedder, paths, **kwargs):  # type: ignore[no-untyped-def]
        with guard:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            passes.append(len(paths))
        try:
            time.sleep(0.2)  # long enough for the rest of the burst to arrive meanwhile
            return real(store, embedder, paths, **kwargs)
        finally:
            with guard:
                active[0] -= 1

    monkeypatch.setattr(warm, "apply_company_paths", counting)
    texts = ["Do you ship to Iceland?", "Is there a store in Oslo?", "Can I pay with a cheque?",
             "Will my warranty cover water damage?", "Can I return a lamp after 40 days?", "Do gift cards expire?"]
    qids = [routed(kb, fake_embedder, text) for text in texts]
    assert len(set(qids)) == 6
    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(lambda q: post(client, {"question_id": q, "answer": f"Store credit for {q}.", "author": "maria"}).status_code, qids))
    assert codes == [200] * 6
    assert peak[0] == 1 and sum(passes) == 6 and len(passes) < 6  # later answers were taken by a running pass
    assert all(get_question(kb, q)["answer"]["retrievable_at"] for q in qids)


def test_wait_returns_once_this_apis_snapshot_serves_the_answer(sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    """A refresh interval of an hour: without ?wait=true's refresh the API would serve the old snapshot that long."""
    kb = open_with_staff_answers(
        sources, api_keys=[{"name": "ops", "key": API_KEY, "role": "admin"}],  # asks as an agent would, answers as staff
        routing={"webhook_secrets": [NEW]}, retrieval={"refresh_interval_seconds": 3600},
    )
    ingest(kb, fake_embedder)
    app = create_app(store=kb, embedder=fake_embedder)
    app.state.embedder = fake_embedder
    client = TestClient(app)
    question = "Can I return a lamp after 40 days?"
    ask = {"query": question, "k": 3}
    auth = {"x-api-key": API_KEY}
    assert client.post("/v1/retrieve", json=ask, headers=auth).json()["results"][0]["kind"] != "staff_answer"  # snapshot loaded
    qid = routed(kb, fake_embedder, question)
    raw = json.dumps({"question_id": qid, "answer": "Lamps get store credit up to day 60.", "author": "maria"}).encode()
    r = client.post("/v1/webhooks/staff-answer?wait=true&timeout=30", content=raw, headers=sign_headers(NEW, raw).as_dict())
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["retrievable"] is True and body["indexing"] == "done" and body["retrievable_at"] and body["waited_s"] < 30
    top = client.post("/v1/retrieve", json=ask, headers=auth).json()["results"][0]
    assert top["kind"] == "staff_answer" and top["doc_id"] == body["doc_id"]

    # the JSON API takes the same wait; without it the 200 says the answer is not retrievable yet
    other = routed(kb, fake_embedder, "Do gift cards expire?")
    plain = client.post(f"/v1/questions/{other}/answer", json={"answer": "Never.", "author": "x"}, headers={"authorization": f"Bearer {API_KEY}"})
    assert plain.status_code == 200 and plain.json()["retrievable"] is False and plain.json()["indexing"] == "scheduled"


def test_wait_is_bounded_and_says_so(client: TestClient, kb: ContextStore, fake_embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from context_store.index import warm

    real, release = warm.apply_company_paths, threading.Event()

    def stuck(*args, **kwargs):  # type: ignore[no-untyped-def]
        release.wait(30)  # an embedder that is far too slow today
        return real(*args, **kwargs)

    monkeypatch.setattr(warm, "apply_company_paths", stuck)
    qid = routed(kb, fake_embedder)
    raw = json.dumps({"question_id": qid, "answer": "Store credit up to day 60.", "author": "maria"}).encode()
    started = time.monotonic()
    r = client.post("/v1/webhooks/staff-answer?wait=true&timeout=0.5", content=raw, headers=sign_headers(NEW, raw).as_dict())
    assert time.monotonic() - started < 10
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["retrievable"] is False and body["indexing"] == "pending" and "not retrievable within 0.5 s" in body["detail"]
    assert answers(kb) == 1  # stored all the same
    release.set()
    from context_store.learn.answers import answer_files

    applier = client.app.state.answer_applier  # type: ignore[attr-defined]
    assert applier.wait_for(answer_files(kb, [body["answer_id"]]), 30)  # indexing went on
    assert get_question(kb, qid)["answer"]["retrievable_at"] is not None
    too_long = client.post("/v1/webhooks/staff-answer?wait=true&timeout=61", content=raw, headers=sign_headers(NEW, raw).as_dict())
    assert too_long.status_code == 400 and too_long.json()["error"]["code"] == "invalid_request" and "timeout" in too_long.text
