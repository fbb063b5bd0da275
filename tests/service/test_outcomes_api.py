"""POST /v1/outcomes on the real app (TestClient, SQLite, LanceDB, fake embedder): stored once, refused precisely."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import func, select

from context_store._common import utcnow
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.route import OutcomeReport, record_outcome
from context_store.store.context_store import ContextStore
from context_store.store.models import Outcome
from service.app import create_app
from tests.conftest import open_on_sources

KEY = {"X-API-Key": "test-key"}
ADMIN = {"X-API-Key": "admin-key"}
API_KEYS = [{"name": "bot", "key": "test-key", "role": "agent"}, {"name": "other-bot", "key": "other-key", "role": "agent"},
            {"name": "ops", "key": "admin-key", "role": "admin"}]


@pytest.fixture
def api_store(sources: dict[str, Path]) -> ContextStore:
    store = open_on_sources(
        sources,
        api_keys=API_KEYS,
        user_state_max_age_hours=24 * 3650,  # the fixture's snapshots are old; this file is about outcomes
        retrieval={"refresh_interval_seconds": 0.0, "confidence_threshold": 0.0},  # every plain question is answered
        outcomes={"max_per_trace": 4},
    )
    ingest(store, HashingEmbedder())
    return store


@pytest.fixture
def client(api_store: ContextStore) -> TestClient:
    with TestClient(create_app(store=api_store, embedder=HashingEmbedder())) as c:
        yield c


def ask(client: TestClient, query: str = "how long is the refund window", **body: Any) -> dict[str, Any]:
    r = client.post("/v1/retrieve", json={"query": query, "user_id": "u-1", **body}, headers=KEY)
    assert r.status_code == 200, r.text
    return r.json()


def report(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/outcomes", json=body, headers=KEY)


def stored(store: ContextStore) -> int:
    with store.session() as s:
        return int(s.exec(select(func.count()).select_from(Outcome)).one())


def test_an_outcome_is_stored_listed_on_its_trace_and_counted(client: TestClient, api_store: ContextStore) -> None:
    trace = ask(client, conversation_id="conv-1")["trace_id"]
    r = report(client, event_id="evt-1", trace_id=trace, outcome="resolved", csat=5, thumbs="up", note="thanks")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["trace_id"] == trace and body["conversation_id"] == "conv-1" and body["source"] == "platform"
    assert body["duplicate"] is False and body["review_question_id"] is None
    listed = client.get(f"/v1/traces/{trace}", headers=KEY).json()
    assert listed["conversation_id"] == "conv-1"
    assert [(o["event_id"], o["outcome"], o["csat"], o["thumbs"]) for o in listed["outcomes"]] == [("evt-1", "resolved", 5, "up")]
    assert client.get(f"/v1/traces/{trace}?replay=true", headers=KEY).json()["outcomes"][0]["event_id"] == "evt-1"
    metrics = client.get("/metrics", headers=ADMIN).text
    assert 'freshcontext_outcomes_total{outcome="resolved",source="platform"} 1.0' in metrics


def test_a_repeated_event_returns_the_first_result_and_stores_nothing_twice(client: TestClient, api_store: ContextStore) -> None:
    trace = ask(client)["trace_id"]
    first = report(client, event_id="evt-dup", trace_id=trace, outcome="unresolved", thumbs="down")
    again = report(client, event_id="evt-dup", trace_id=trace, outcome="unresolved", thumbs="down")
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json() == {**first.json(), "duplicate": True}
    assert stored(api_store) == 1
    reused = report(client, event_id="evt-dup", trace_id=trace, outcome="resolved")
    assert reused.status_code == 409 and reused.json()["error"]["code"] == "event_id_reused"
    assert stored(api_store) == 1


def test_concurrent_repeats_store_one_outcome(client: TestClient, api_store: ContextStore) -> None:
    trace = ask(client)["trace_id"]
    barrier = threading.Barrier(8)
    results: list[Any] = []

    def send() -> None:
        barrier.wait()
        results.append(record_outcome(api_store, OutcomeReport(event_id="evt-race", trace_id=trace, outcome="reopened")))

    threads = [threading.Thread(target=send) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and stored(api_store) == 1
    assert sum(not r.duplicate for r in results) == 1  # one stored it; seven got the first result back
    assert len({(r.event_id, r.recorded_at, r.review_question_id) for r in results}) == 1


def test_unknown_trace_and_unknown_conversation_are_404(client: TestClient) -> None:
    r = report(client, event_id="e1", trace_id="tr-nope", outcome="resolved")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_trace"
    r = report(client, event_id="e2", conversation_id="conv-nope", outcome="resolved")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_conversation"


@pytest.mark.parametrize(("body", "code"), [
    ({"outcome": "fixed"}, "invalid_outcome"),
    ({"outcome": "repeat_contact"}, "invalid_outcome"),  # derived by freshcontext, never reported
    ({"outcome": "resolved", "csat": 0}, "invalid_csat"),
    ({"outcome": "resolved", "csat": 6}, "invalid_csat"),
    ({"outcome": "resolved", "csat": "great"}, "invalid_request"),  # not even a number: the schema refuses it
    ({"outcome": "resolved", "thumbs": "sideways"}, "invalid_thumbs"),
    ({"outcome": "resolved", "at": "yesterday"}, "invalid_time"),
    ({"outcome": "resolved", "note": "x" * 2001}, "note_too_long"),
    ({"outcome": "resolved", "trace_id": None}, "missing_target"),
    ({"outcome": "resolved", "conversation_id": "other-conv"}, "target_mismatch"),
    ({"outcome": "resolved", "event_id": ""}, "invalid_event_id"),
    ({"outcome": "resolved", "colour": "blue"}, "invalid_request"),  # unknown fields are refused, not ignored
])
def test_bad_values_are_400_with_their_own_code(client: TestClient, api_store: ContextStore, body: dict[str, Any], code: str) -> None:
    trace = ask(client, conversation_id="conv-1")["trace_id"]
    r = report(client, **{"event_id": "evt-bad", "trace_id": trace, **body})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["code"] == code
    assert stored(api_store) == 0


def test_a_time_in_the_future_or_before_the_response_is_refused(client: TestClient, api_store: ContextStore) -> None:
    served = ask(client)
    trace = served["trace_id"]
    ahead = (utcnow() + timedelta(hours=1)).isoformat()
    r = report(client, event_id="e-future", trace_id=trace, outcome="resolved", at=ahead)
    assert r.status_code == 400 and r.json()["error"]["code"] == "outcome_in_future"
    before = "2020-01-01T00:00:00Z"
    r = report(client, event_id="e-past", trace_id=trace, outcome="resolved", at=before)
    assert r.status_code == 400 and r.json()["error"]["code"] == "outcome_before_trace"
    within_skew = (utcnow() + timedelta(seconds=20)).isoformat()  # another clock a little ahead of ours is fine
    assert report(client, event_id="e-skew", trace_id=trace, outcome="resolved", at=within_skew).status_code == 201
    assert stored(api_store) == 1


def test_a_flood_of_outcomes_for_one_response_is_429(client: TestClient, api_store: ContextStore) -> None:
    trace = ask(client)["trace_id"]
    codes = [report(client, event_id=f"flood-{i}", trace_id=trace, outcome="resolved").status_code for i in range(6)]
    assert codes == [201, 201, 201, 201, 429, 429]
    r = report(client, event_id="flood-9", trace_id=trace, outcome="resolved")
    assert r.json()["error"]["code"] == "too_many_outcomes" and "max_per_trace" in r.json()["error"]["message"]
    assert stored(api_store) == 4
    # a repeat of a stored event is still answered: the cap counts new outcomes, not retries
    assert report(client, event_id="flood-0", trace_id=trace, outcome="resolved").status_code == 200


def test_outcomes_need_a_key_and_an_agent_reports_on_its_own_responses(client: TestClient) -> None:
    trace = ask(client, conversation_id="conv-own")["trace_id"]
    r = client.post("/v1/outcomes", json={"event_id": "e", "trace_id": trace, "outcome": "resolved"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = client.post("/v1/outcomes", json={"event_id": "e", "trace_id": trace, "outcome": "resolved"}, headers={"X-API-Key": "wrong"})
    assert r.status_code == 401
    other = {"X-API-Key": "other-key"}  # another agent's key: that response is not one it can name
    r = client.post("/v1/outcomes", json={"event_id": "e", "trace_id": trace, "outcome": "resolved"}, headers=other)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_trace"
    r = client.post("/v1/outcomes", json={"event_id": "e", "conversation_id": "conv-own", "outcome": "resolved"}, headers=other)
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_conversation"
    assert client.post("/v1/outcomes", json={"event_id": "e", "trace_id": trace, "outcome": "resolved"}, headers=ADMIN).status_code == 201


def test_a_conversation_names_its_latest_response_at_the_outcomes_time(client: TestClient) -> None:
    first = ask(client, conversation_id="conv-9")["trace_id"]
    middle = utcnow()
    second = ask(client, "how do I download an invoice", conversation_id="conv-9")["trace_id"]
    r = report(client, event_id="c-now", conversation_id="conv-9", outcome="resolved")
    assert r.status_code == 201 and r.json()["trace_id"] == second
    r = report(client, event_id="c-then", conversation_id="conv-9", outcome="unresolved", at=middle.isoformat())
    assert r.status_code == 201 and r.json()["trace_id"] == first
    r = report(client, event_id="c-before", conversation_id="conv-9", outcome="resolved", at="2020-01-01T00:00:00Z")
    assert r.status_code == 400 and r.json()["error"]["code"] == "outcome_before_trace"
