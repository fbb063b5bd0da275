"""The red button (POST /v1/handoff) and retrieval history: working memory, joining, bounds, the staff page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from context_store.errors import InvalidRequest, TooLarge, UnknownUser
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.route import MAX_TRANSCRIPT_TURNS, MAX_TURN_CHARS, check_turns, request_handoff
from context_store.route.transcript import MAX_TRANSCRIPT_CHARS, merge_turns
from context_store.store.context_store import ContextStore
from service.app import create_app
from tests.conftest import open_on_sources

KEY = {"X-API-Key": "test-key"}
STAFF = {"X-API-Key": "staff-key"}  # the queue is staff's (issue 16 roles)
TRANSCRIPT = [
    {"role": "user", "text": "my parcel A-1 never arrived", "at": "2026-12-01T10:00:00Z"},
    {"role": "agent", "text": "It shipped with DHL on Monday.", "at": "2026-12-01T10:00:05Z"},
    {"role": "user", "text": "that was a week ago, I want to talk to a person", "at": "2026-12-01T10:01:00Z"},
]


@pytest.fixture
def handoff_store(sources: dict[str, Path]) -> ContextStore:
    store = open_on_sources(
        sources,
        api_keys=[{"name": "bot", "key": "test-key"}, {"name": "maria", "key": "staff-key", "role": "staff"}],
        retrieval={"refresh_interval_seconds": 0.0, "confidence_threshold": 0.99},  # every retrieval escalates
    )
    ingest(store, HashingEmbedder())
    return store


@pytest.fixture
def client(handoff_store: ContextStore) -> TestClient:
    with TestClient(create_app(store=handoff_store, embedder=HashingEmbedder())) as c:
        yield c


def press(client: TestClient, **body: Any) -> Any:
    return client.post("/v1/handoff", json={"conversation_id": "c-1", "reason": "the user asked for a person",
                                            "transcript": TRANSCRIPT, **body}, headers=KEY)


def test_handoff_opens_a_question_with_transcript_user_state_and_last_context(client: TestClient) -> None:
    served = client.post("/v1/retrieve", json={"query": "how long is the refund window", "conversation_id": "c-1", "k": 2},
                         headers=KEY).json()
    r = press(client, user_id="u-1")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["kind"] == "handoff" and body["joined"] is False and body["trace_id"] == served["trace_id"]
    q = client.get(f"/v1/questions/{body['question_id']}", headers=STAFF).json()
    assert q["kind"] == "handoff" and q["status"] == "open" and q["conversation_id"] == "c-1"
    assert [t["text"] for t in q["transcript"]] == [t["text"] for t in TRANSCRIPT]
    assert q["transcript"][0]["at"].startswith("2026-12-01T10:00:00")
    assert q["text"] == TRANSCRIPT[-1]["text"]  # the user's last words are what the person is asked about
    assert q["reasons"] == [{"code": "handoff_requested", "detail": "the user asked for a person", "score": None, "source": "agent"}]
    assert q["user_version_id"] and any("A-1" in f["text"] for f in q["user_state"])
    assert [c["version_id"] for c in q["context"]] == [x["version_id"] for x in served["results"]]
    assert all(c["text"] for c in q["context"])  # rebuilt from the versioned store: the person reads what the agent read


def test_a_second_press_joins_the_open_handoff_and_adds_the_new_turns(client: TestClient) -> None:
    first = press(client).json()
    more = [*TRANSCRIPT, {"role": "agent", "text": "A person will take over shortly."}]
    r = press(client, transcript=more, reason="still waiting")
    assert r.status_code == 200, r.text
    assert r.json()["joined"] is True and r.json()["question_id"] == first["question_id"] and r.json()["ask_count"] == 2
    q = client.get(f"/v1/questions/{first['question_id']}", headers=STAFF).json()
    assert len(q["transcript"]) == 4 and len(q["asks"]) == 2  # nothing twice
    other = press(client, conversation_id="c-2").json()
    assert other["question_id"] != first["question_id"] and other["joined"] is False


def test_bad_handoffs_get_specific_errors(client: TestClient) -> None:
    r = press(client, user_id="u-nobody")
    assert r.status_code == 404 and r.json()["error"]["code"] == "unknown_user" and "u-nobody" in r.json()["error"]["message"]
    r = press(client, transcript=[{"role": "user", "text": "hi"}] * (MAX_TRANSCRIPT_TURNS + 1))
    assert r.status_code == 413 and r.json()["error"]["code"] == "transcript_too_large"
    assert f"at most {MAX_TRANSCRIPT_TURNS}" in r.json()["error"]["message"]
    r = press(client, transcript=[{"role": "user", "text": "x" * (MAX_TURN_CHARS + 1)}])
    assert r.status_code == 413 and "transcript[0].text" in r.json()["error"]["message"]
    r = press(client, transcript=[])
    assert r.status_code == 400 and "at least one turn" in r.json()["error"]["message"]
    r = press(client, transcript=[{"role": "robot", "text": "hi"}])
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_request"
    r = press(client, reason="")
    assert r.status_code == 400 and "reason" in r.json()["error"]["message"]
    r = client.post("/v1/handoff", json={"conversation_id": "c-1", "reason": "x", "transcript": TRANSCRIPT})
    assert r.status_code == 401
    assert client.get("/v1/questions?status=open", headers=STAFF).json()["questions"] == []  # nothing half-made


def test_retrieve_history_is_kept_with_the_trace_and_the_routed_question(client: TestClient) -> None:
    r = client.post("/v1/retrieve", headers=KEY, json={
        "query": "how long is the refund window", "conversation_id": "c-9", "history": TRANSCRIPT[:2]})
    assert r.status_code == 200, r.text
    body = r.json()
    trace = client.get(f"/v1/traces/{body['trace_id']}", headers=KEY).json()
    assert trace["conversation_id"] == "c-9" and [t["text"] for t in trace["history"]] == [t["text"] for t in TRANSCRIPT[:2]]
    assert body["decision"] == "escalate"
    q = client.get(f"/v1/questions/{body['routed_question']['question_id']}", headers=STAFF).json()
    assert q["kind"] == "escalation" and [t["role"] for t in q["transcript"]] == ["user", "agent"]
    r = client.post("/v1/retrieve", headers=KEY, json={"query": "refunds", "history": [{"role": "user", "text": "a"}] * 51})
    assert r.status_code == 413 and r.json()["error"]["code"] == "history_too_large"


def test_the_staff_page_shows_the_transcript_as_a_conversation(client: TestClient) -> None:
    question_id = press(client, transcript=[*TRANSCRIPT, {"role": "user", "text": "<b>hello</b>"}]).json()["question_id"]
    client.post("/staff/login", data={"api_key": "staff-key"})  # the page is for a signed-in staff session
    html = client.get("/staff").text
    section = html[html.index(f'data-question-id="{question_id}"'):]
    assert 'data-kind="handoff"' in html and "The conversation (4 turns)" in section
    assert section.index("my parcel A-1 never arrived") < section.index("It shipped with DHL on Monday.")
    assert '<li class="turn user">' in section and '<li class="turn agent">' in section
    assert "&lt;b&gt;hello&lt;/b&gt;" in section and "<b>hello</b>" not in section  # customer text is data


def test_core_bounds_and_merge(handoff_store: ContextStore) -> None:
    with pytest.raises(TooLarge) as too_many:
        check_turns([{"role": "user", "text": "x" * 1000}] * 101)
    assert too_many.value.code == "transcript_too_large" and str(MAX_TRANSCRIPT_CHARS) in str(too_many.value)
    with pytest.raises(InvalidRequest, match=r"transcript\[1\]\.at"):
        check_turns([{"role": "user", "text": "a"}, {"role": "user", "text": "b", "at": "yesterday"}])
    with pytest.raises(UnknownUser):
        request_handoff(handoff_store, conversation_id="c", reason="r", transcript=[{"role": "user", "text": "a"}], user_id="nobody")
    kept = check_turns([{"role": "user", "text": "a"}, {"role": "agent", "text": "b"}])
    assert [t["text"] for t in merge_turns(kept, check_turns([{"role": "agent", "text": "b"}, {"role": "user", "text": "c"}]))] == ["a", "b", "c"]
    assert len(merge_turns(kept, kept, max_turns=1)) == 1
    outcome = request_handoff(handoff_store, conversation_id="c", reason="r", transcript=[{"role": "user", "text": "a"}])
    assert outcome.trace_id is None and not outcome.joined  # no earlier response: the transcript is the memory
