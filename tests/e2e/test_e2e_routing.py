"""The learning loop end to end on the real model, SQLite and LanceDB.

ask -> escalate (routed, with working memory) -> signed staff answer over HTTP ->
ask again (a paraphrase, another user) -> answered from the staff answer, citing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from context_store.index.embed.torch_backend import SentenceTransformerEmbedder
from context_store.index.ingest import ingest
from context_store.learn.review import learning_metrics
from context_store.retrieve.retriever import retrieve
from context_store.route.questions import get_question
from context_store.route.webhooks import generate_secret, sign_headers
from context_store.store.context_store import ContextStore
from service.app import create_app
from tests.conftest import open_with_staff_answers

pytestmark = pytest.mark.e2e
SECRET = generate_secret()
KEY = {"x-api-key": "agent-key"}


def test_ask_escalate_answer_ask_again(sources: dict[str, Path]) -> None:
    """Through POST /v1/retrieve with the real model and the API's own confidence and decision."""
    emb = SentenceTransformerEmbedder()
    store = open_with_staff_answers(
        sources,
        user_state_max_age_hours=24 * 365,
        api_keys=["agent-key"],
        routing={"webhook_secrets": [SECRET]},
    )
    ingest(store, emb)
    client = TestClient(create_app(store=store, embedder=emb))

    question = "Can I bring my broken Lumora lamp to the Berlin showroom for a repair?"
    first = client.post("/v1/retrieve", json={"query": question, "user_id": "u-1", "conversation_id": "c-1"}, headers=KEY).json()
    assert first["decision"] == "escalate" and "low_confidence" in {r["code"] for r in first["reasons"]}
    qid = first["routed_question"]["question_id"]
    memory = get_question(store, qid)
    assert memory["user_id"] == "u-1" and memory["conversation_id"] == "c-1" and memory["trace_id"] == first["trace_id"]
    assert memory["user_version_id"] == first["user"]["snapshot_version_id"]
    assert [c["version_id"] for c in memory["context"]] == [h["version_id"] for h in first["results"]]
    trace = client.get(f"/v1/traces/{first['trace_id']}", headers=KEY).json()
    assert "low_confidence" in json.dumps(trace)

    body = json.dumps({
        "question_id": qid, "author": "maria@lumora",
        "answer": "Yes. The Berlin showroom at Torstrasse 12 repairs Lumora lamps while you wait, Monday to Saturday.",
    }).encode()
    # ?wait=true: the 200 comes once this API's dense snapshot and text index can return the answer
    r = client.post("/v1/webhooks/staff-answer?wait=true", content=body, headers=sign_headers(SECRET, body).as_dict())
    assert r.status_code == 200, r.text
    assert r.json()["retrievable"] is True and r.json()["retrievable_at"], r.json()
    answer_doc = r.json()["doc_id"]

    # a paraphrase by another user is now answered without a person, citing the staff answer
    again = client.post("/v1/retrieve", json={"query": "is it possible to get my lamp repaired at the showroom in Berlin?", "user_id": "u-2"},
                        headers=KEY).json()
    assert again["decision"] == "answer", again["reasons"]
    assert again["routed_question"] is None and again["confidence"] >= 0.5
    top = again["results"][0]
    assert top["doc_id"] == answer_doc and top["kind"] == "staff_answer" and "Torstrasse 12" in top["text"]
    # and so is the original question, word for word
    same = client.post("/v1/retrieve", json={"query": question}, headers=KEY).json()
    assert same["decision"] == "answer" and same["results"][0]["doc_id"] == answer_doc

    q = get_question(store, qid)
    assert q["status"] == "answered" and q["asks"][0]["user_id"] == "u-1"  # the original asker can be looked up
    metrics = learning_metrics(store)
    assert metrics["answers_retrievable"] == 1 and metrics["time_to_knowledge_p95_s"] < 30
    assert metrics["reasked_answered_without_person"] == 2 and metrics["escalations"] == 1


POLICY_CASES = [
    ("can I get a human on the line", "human_requested"),
    ("stop, I want a real agent", "human_requested"),
    ("connect me with someone from your support staff", "human_requested"),
    ("someone stole my credit card and bought stuff", "sensitive_topic"),
    ("I can’t pay my rent this month, can I pause my plan", "sensitive_topic"),
    ("I'm going to sue Lumora", "sensitive_topic"),
    ("I got locked out after too many password attempts", "sensitive_topic"),
    ("the refund you sent was too small and I want to contest it", "sensitive_topic"),
    ("there are charges on my card from a shop I never visited", "sensitive_topic"),
    ("How do refunds work?", None),
    ("where is my order", None),
    ("how do I reset my password", None),
    ("please call me Mike from now on", None),
    ("are you a human or a computer?", None),
    ("what does the Plus plan cost", None),
]


def test_default_trigger_lists_on_the_real_model(sources: dict[str, Path]) -> None:
    """The shipped phrase and example lists, matched with the serving model, on requests and near misses."""
    from context_store.route.policy import RoutingConfig
    from context_store.route.triggers import escalation_reasons

    emb = SentenceTransformerEmbedder()
    store = ContextStore.open(sources["home"], company_sources=[{"name": "company", "path": str(sources["company"])}])
    ingest(store, emb)
    config = RoutingConfig(source_max_age_days={})
    wrong = []
    for text, expected in POLICY_CASES:
        got = {r.code for r in escalation_reasons(store, emb, retrieve(store, emb, text), config=config)}
        if got != ({expected} if expected else set()):
            wrong.append((text, expected, got))
    assert not wrong, wrong
