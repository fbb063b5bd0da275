"""The /v1 API with TestClient on a real small index (SQLite + LanceDB under tmp_path, fake embedder)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from context_store._common import utcnow
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.route.decision import Reason
from context_store.state.documents import sync_company_sources
from context_store.store.context_store import ContextStore
from service.app import create_app
from service.schemas import RetrieveResponse
from tests.conftest import REFUNDS_V1, open_on_sources

KEY = {"X-API-Key": "test-key"}
ADMIN = {"X-API-Key": "admin-key"}
API_KEYS = [{"name": "bot", "key": "test-key", "role": "agent"}, {"name": "ops", "key": "admin-key", "role": "admin"}]
REFUNDS_V2 = REFUNDS_V1.replace("within 30 days of delivery", "within 14 days of delivery")
USERS = [f"u-{i}" for i in range(6)]


@pytest.fixture
def api_store(sources: dict[str, Path]) -> ContextStore:
    for i, user in enumerate(USERS):
        (sources["users"] / f"{user}.json").write_text(json.dumps({
            "user_id": user, "captured_at": "2026-11-20T10:00:00Z",
            "account": {"status": "active", "plan": f"plan-{user}"},
            "orders": [{"order_id": f"ORD-{user}-{n}", "status": "shipped", "carrier": "DHL"} for n in range(i + 1)],
        }))
    store = open_on_sources(
        sources,
        api_keys=API_KEYS,
        retrieval={"refresh_interval_seconds": 0.0, "confidence_threshold": 0.5},
    )
    ingest(store, HashingEmbedder())
    return store


@pytest.fixture
def client(api_store: ContextStore) -> TestClient:
    with TestClient(create_app(store=api_store, embedder=HashingEmbedder())) as c:
        yield c


def post(client: TestClient, body: dict[str, Any], headers: dict[str, str] = KEY) -> Any:
    return client.post("/v1/retrieve", json=body, headers=headers)


def test_retrieve_shape_citations_and_trace(client: TestClient) -> None:
    # Every content word is in the corpus: with the toy embedder the text ranker carries the ranking.
    r = post(client, {"query": "what is the refund window", "user_id": "u-1", "k": 3})
    assert r.status_code == 200, r.text
    body = r.json()
    top = body["results"][0]
    assert top["doc_id"] == "company/refunds.md" and "30 days" in top["text"]
    for field in ("version_id", "title", "source_path", "score", "source_changed_at", "indexed_at", "age_seconds"):
        assert top[field] is not None
    assert body["user"]["user_id"] == "u-1" and body["user"]["stale"] in (True, False)
    assert body["user"]["snapshot_version_id"] and body["user"]["captured_at"].startswith("2026-11-20")
    assert 0.0 <= body["confidence"] <= 1.0 and body["decision"] in ("answer", "escalate")
    assert body["threshold"] == 0.5 and body["trace_id"].startswith("tr-")
    trace = client.get(f"/v1/traces/{body['trace_id']}", headers=KEY).json()
    assert [x["chunk_id"] for x in trace["results"]] == [x["chunk_id"] for x in body["results"]]
    assert trace["model"] == "hashing-test-embedder" and trace["table_versions"]["company_chunks"] is not None
    assert trace["threshold"] == 0.5 and trace["decision"] == body["decision"]
    assert all(x["content_hash"] and x["chunk_hash"] for x in trace["results"])
    # The handler serialises the body itself: it must be exactly what the OpenAPI schema documents.
    escalated = post(client, {"query": "I want to talk to a human about my refund", "user_id": "u-2"}).json()
    assert escalated["routed_question"]["question_id"].startswith("q-")
    for served in (body, escalated):
        assert RetrieveResponse.model_validate(served).model_dump(mode="json") == served


def test_edited_document_never_returns_old_text_and_as_of_does(client: TestClient, api_store: ContextStore, sources: dict[str, Path]) -> None:
    before = utcnow()
    time.sleep(0.01)
    (sources["company"] / "refunds.md").write_text(REFUNDS_V2)
    # Versioned in SQL but not yet re-indexed: LanceDB still holds the old rows. They must not be served.
    sync_company_sources(api_store)
    body = post(client, {"query": "refund window days of delivery", "k": 10}).json()
    assert all("30 days" not in h["text"] for h in body["results"])
    ingest(api_store, HashingEmbedder())
    body = post(client, {"query": "refund window days of delivery", "k": 10}).json()
    texts = " ".join(h["text"] for h in body["results"])
    assert "14 days" in texts and "30 days" not in texts
    assert all(h["current"] for h in body["results"])
    old = post(client, {"query": "refund window days of delivery", "k": 10, "as_of": before.isoformat()}).json()
    refunds = [h for h in old["results"] if h["doc_id"] == "company/refunds.md"]
    assert refunds and any("30 days" in h["text"] for h in refunds)
    assert all(h["current"] is False and h["valid_to"] is not None for h in refunds)  # it says the text was superseded
    assert old["as_of"] is not None
    versions = client.get("/v1/documents/company/refunds.md/versions", headers=KEY).json()["versions"]
    assert len(versions) == 2 and [v["current"] for v in versions] == [False, True]
    then = client.get("/v1/documents/company/refunds.md/versions", params={"as_of": before.isoformat()}, headers=KEY).json()
    assert len(then["versions"]) == 1 and "30 days" in then["versions"][0]["text"]
    assert client.get("/v1/documents/company/nope.md/versions", headers=KEY).json()["error"]["code"] == "not_found"


def test_trace_replays_what_was_served_after_the_source_changed(client: TestClient, api_store: ContextStore, sources: dict[str, Path]) -> None:
    body = post(client, {"query": "refund window", "user_id": "u-2", "k": 4}).json()
    (sources["company"] / "refunds.md").write_text(REFUNDS_V2)
    ingest(api_store, HashingEmbedder())
    replayed = client.get(f"/v1/traces/{body['trace_id']}", params={"replay": "true"}, headers=KEY).json()
    assert replayed["verified"] is True
    assert [r["text"] for r in replayed["results"]] == [h["text"] for h in body["results"]]
    assert any("30 days" in r["text"] for r in replayed["results"])  # the old text, exactly as served
    assert replayed["user_version_id"] == body["user"]["snapshot_version_id"]
    assert [f["text"] for f in replayed["user_facts"]] == [f["text"] for f in body["user"]["facts"]]
    assert client.get("/v1/traces/tr-missing", headers=KEY).status_code == 404


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(user=st.sampled_from(USERS), query=st.text(alphabet="abcdefghijklmnopqrstuvwxyz -0123456789", min_size=1, max_size=40).filter(str.strip), mode=st.sampled_from(["hybrid", "vector", "text", "rrf"]))
def test_user_never_sees_another_users_state(client: TestClient, user: str, query: str, mode: str) -> None:
    body = post(client, {"query": query, "user_id": user, "mode": mode}).json()
    assert body["user"]["user_id"] == user
    facts = " ".join(f["text"] for f in body["user"]["facts"])
    assert f"plan-{user}" in facts
    others = [u for u in USERS if u != user]
    assert not any(f"plan-{o}" in facts or f"ORD-{o}-" in facts for o in others)
    assert len([f for f in body["user"]["facts"] if "ORD-" in f["text"]]) == USERS.index(user) + 1


def test_user_filter_is_inside_the_lancedb_query(api_store: ContextStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from context_store.retrieve.retriever import Retriever

    seen: list[str | None] = []
    real = api_store.index.rows

    def spy(name, where, columns=None, limit=10_000):  # type: ignore[no-untyped-def]
        if name == api_store.index.user_table_name:
            seen.append(where)
        return real(name, where, columns=columns, limit=limit)

    monkeypatch.setattr(api_store.index, "rows", spy)
    Retriever(api_store, HashingEmbedder()).retrieve("order status", user_id="u-3")
    assert seen and "user_id = 'u-3'" in seen[0]


def test_auth(api_store: ContextStore, monkeypatch: pytest.MonkeyPatch) -> None:
    with TestClient(create_app(store=api_store, embedder=HashingEmbedder())) as c:
        assert post(c, {"query": "refund"}, headers={}).status_code == 401
        bad = post(c, {"query": "refund"}, headers={"X-API-Key": "nope"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "unauthorized"
        assert post(c, {"query": "refund"}, headers={"Authorization": "Bearer test-key"}).status_code == 200
        assert c.get("/v1/traces/x", headers={}).status_code == 401
        assert c.get("/healthz").status_code == 200  # probes need no key
    monkeypatch.setenv("FRESHCONTEXT_API_KEYS", "env-key-1, env-key-2")
    with TestClient(create_app(store=api_store, embedder=HashingEmbedder())) as c:
        assert post(c, {"query": "refund"}, headers={"X-API-Key": "env-key-2"}).status_code == 200
    monkeypatch.delenv("FRESHCONTEXT_API_KEYS")
    api_store.settings.api_keys = []
    with TestClient(create_app(store=api_store, embedder=HashingEmbedder())) as c:
        r = post(c, {"query": "refund"}, headers={"X-API-Key": "test-key"})
        assert r.status_code == 401 and "no API keys are configured" in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "status", "code", "needle"),
    [
        ({"query": ""}, 400, "invalid_request", "query is empty"),
        ({"query": "   "}, 400, "invalid_request", "query is empty"),
        ({"query": "x" * 2001}, 400, "invalid_request", "limit is 2000"),
        ({"query": "refund", "k": 0}, 400, "invalid_request", "k must be between 1 and 100"),
        ({"query": "refund", "k": 101}, 400, "invalid_request", "k must be between 1 and 100"),
        ({"query": "refund", "k": "many"}, 400, "invalid_request", "k:"),
        ({"query": "refund", "user_id": "u-404"}, 404, "unknown_user", "u-404"),
        ({"query": "refund", "as_of": "last tuesday"}, 400, "invalid_request", "ISO-8601"),
        ({"query": "refund", "as_of": "2999-01-01T00:00:00Z"}, 400, "invalid_request", "in the future"),
        ({"query": "refund", "filters": {"colour": "red"}}, 400, "invalid_request", "unknown filter"),
        ({"query": "refund", "mode": "magic"}, 400, "invalid_request", "mode"),
        ({"query": "refund", "extra": 1}, 400, "invalid_request", "extra"),
        ({"k": 3}, 400, "invalid_request", "query"),
    ],
)
def test_bad_input_gets_a_specific_4xx(client: TestClient, body: dict[str, Any], status: int, code: str, needle: str) -> None:
    r = post(client, body)
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert error["code"] == code and needle.lower() in error["message"].lower()


def test_bad_json(client: TestClient) -> None:
    r = client.post("/v1/retrieve", content=b"{not json", headers={**KEY, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "malformed_json"


def test_filters_restrict_results(client: TestClient) -> None:
    body = post(client, {"query": "invoices refund", "k": 10, "filters": {"doc_ids": ["company/billing/invoices.md"]}}).json()
    assert body["results"] and {h["doc_id"] for h in body["results"]} == {"company/billing/invoices.md"}
    body = post(client, {"query": "invoices refund", "k": 10, "filters": {"sources": "nosuchsource"}}).json()
    assert body["results"] == [] and body["decision"] == "escalate"
    assert {r["code"] for r in body["reasons"]} >= {"no_results", "low_confidence"}


def test_decision_reasons_and_trigger_seam(api_store: ContextStore) -> None:
    def repeat_contact(result, confidence):  # type: ignore[no-untyped-def]
        return Reason("repeat_contact", "u-1 asked about this twice today", source="routing") if result.user_id == "u-1" else None

    api_store.settings.retrieval.confidence_threshold = 0.0
    api_store.settings.user_state_max_age_hours = 24 * 3650  # the fixture's snapshots are days old: not what this tests
    with TestClient(create_app(store=api_store, embedder=HashingEmbedder(), triggers=[repeat_contact])) as c:
        assert post(c, {"query": "refund window", "user_id": "u-2"}).json()["decision"] == "answer"
        body = post(c, {"query": "refund window", "user_id": "u-1"}).json()
        assert body["decision"] == "escalate"
        assert body["reasons"] == [{"code": "repeat_contact", "detail": "u-1 asked about this twice today", "source": "routing", "score": None}]
    api_store.settings.retrieval.confidence_threshold = 1.0
    with TestClient(create_app(store=api_store, embedder=HashingEmbedder())) as c:
        body = post(c, {"query": "refund window"}).json()
        assert body["decision"] == "escalate" and body["reasons"][0]["code"] == "low_confidence"
        assert "below the threshold 1.000" in body["reasons"][0]["detail"]
        metrics = c.get("/metrics", headers=ADMIN).text
    assert 'freshcontext_decisions_total{decision="escalate"} 1.0' in metrics
    assert 'freshcontext_escalation_reasons_total{code="low_confidence"} 1.0' in metrics
    assert 'freshcontext_http_request_seconds_bucket{le="0.005",method="POST",route="/v1/retrieve"}' in metrics
    assert "freshcontext_results_served_total" in metrics


def test_readyz_and_openapi(client: TestClient) -> None:
    ready = client.get("/readyz", headers=ADMIN).json()
    assert ready["status"] == "ready" and ready["checks"]["sql"] == "ok" and ready["checks"]["model"]["loaded"]
    assert ready["checks"]["reranker"] == "not configured"
    spec = client.get("/openapi.json").json()
    assert {"/v1/retrieve", "/v1/traces/{trace_id}", "/v1/documents/{doc_id}/versions", "/readyz", "/metrics"} <= set(spec["paths"])


def test_new_documents_appear_without_restart(client: TestClient, api_store: ContextStore, sources: dict[str, Path]) -> None:
    assert not any("gift card" in h["text"].lower() for h in post(client, {"query": "gift card balance", "k": 10}).json()["results"])
    (sources["company"] / "gift.md").write_text("# Gift cards\n\n## Balance\n\nYour gift card balance is under Wallet.\n")
    ingest(api_store, HashingEmbedder())
    results = post(client, {"query": "gift card balance", "k": 10}).json()["results"]
    assert results[0]["doc_id"] == "company/gift.md"


def test_serving_continues_while_ingest_writes(client: TestClient, api_store: ContextStore, sources: dict[str, Path]) -> None:
    errors: list[str] = []
    stop = threading.Event()

    def writer() -> None:
        for n in range(6):
            (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", f"{30 + n + 1} days"))
            ingest(api_store, HashingEmbedder())
        stop.set()

    t = threading.Thread(target=writer)
    t.start()
    served = 0
    while not stop.is_set() or served < 5:
        r = post(client, {"query": "refund window days", "k": 10})
        if r.status_code != 200:
            errors.append(r.text)
            continue
        served += 1
        windows = {h["version_id"] for h in r.json()["results"] if h["doc_id"] == "company/refunds.md"}
        if len(windows) > 1:
            errors.append(f"two versions of one document in one response: {windows}")
    t.join()
    assert not errors and served >= 5
