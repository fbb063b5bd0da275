"""Roles (agent, staff, admin), per-key traces, and staff page sessions (issue 16, class 7)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.store.context_store import ContextStore
from service.app import create_app
from tests.conftest import open_with_staff_answers

KEYS = [
    {"name": "bot", "key": "agent-key-1", "role": "agent"},
    {"name": "other-bot", "key": "agent-key-2", "role": "agent"},
    {"name": "maria", "key": "staff-key-1", "role": "staff"},
    {"name": "ops", "key": "admin-key-1", "role": "admin"},
]
BOT, OTHER, STAFF, ADMIN = ({"X-API-Key": k["key"]} for k in KEYS)


@pytest.fixture
def kb(sources: dict[str, Path]) -> ContextStore:
    store = open_with_staff_answers(sources, api_keys=KEYS, retrieval={"refresh_interval_seconds": 0.0})
    ingest(store, HashingEmbedder())
    return store


@pytest.fixture
def client(kb: ContextStore) -> Iterator[TestClient]:
    with TestClient(create_app(store=kb, embedder=HashingEmbedder(), warm_up=False), base_url="https://testserver") as c:
        yield c


def _trace(client: TestClient, headers: dict[str, str]) -> str:
    r = client.post("/v1/retrieve", json={"query": "how long is the refund window", "user_id": "u-1"}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()["trace_id"]


def test_an_agent_key_reads_only_its_own_traces(client: TestClient) -> None:
    mine = _trace(client, BOT)
    assert client.get(f"/v1/traces/{mine}", headers=BOT).json()["client"] == "bot"
    never = client.get("/v1/traces/never-recorded", headers=OTHER)
    assert never.status_code == 404 and never.json()["error"]["code"] == "unknown_trace"
    for path in (f"/v1/traces/{mine}", f"/v1/traces/{mine}?replay=true"):
        theirs = client.get(path, headers=OTHER)
        assert theirs.status_code == 404 and theirs.json()["error"]["code"] == "unknown_trace"  # the same as an id that never existed
        assert client.get(path, headers=STAFF).status_code == 200  # staff work the queue, which links traces
        assert client.get(path, headers=ADMIN).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("post", "/v1/retrieve", {"agent", "admin"}),
        ("get", "/v1/questions", {"staff", "admin"}),
        ("get", "/v1/learning", {"staff", "admin"}),
        ("get", "/v1/documents/company/refunds.md/versions", {"agent", "staff", "admin"}),
        ("get", "/metrics", {"admin"}),
    ],
)
def test_each_role_reaches_only_its_routes(client: TestClient, method: str, path: str, allowed: set[str]) -> None:
    for key in KEYS:
        kwargs = {"json": {"query": "refund window"}} if method == "post" else {}
        r = getattr(client, method)(path, headers={"X-API-Key": key["key"]}, **kwargs)
        if key["role"] in allowed:
            assert r.status_code == 200, (key["name"], path, r.text)
        else:
            assert r.status_code == 403, (key["name"], path, r.text)
            assert r.json()["error"]["code"] == "forbidden" and key["role"] in r.json()["error"]["message"]


def test_readyz_details_are_for_admins(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    for headers in ({}, BOT, STAFF):
        assert client.get("/readyz", headers=headers).json() == {"status": "ready"}  # no key count, versions or errors
    assert client.get("/readyz", headers=ADMIN).json()["checks"]["api_keys"] == 4
    assert client.get("/metrics").status_code == 401


def test_ops_details_are_open_on_a_loopback_connection_unless_turned_off(kb: ContextStore) -> None:
    app = create_app(store=kb, embedder=HashingEmbedder(), warm_up=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as local:
        assert local.get("/metrics").status_code == 200 and "checks" in local.get("/readyz").json()
        kb.settings.service.ops_open_on_loopback = False
        assert local.get("/metrics").status_code == 401 and "checks" not in local.get("/readyz").json()


def test_the_old_flat_key_list_is_read_as_agent_keys_with_a_warning(sources: dict[str, Path], caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="context_store.settings"):
        store = open_with_staff_answers(sources, api_keys=["flat-old-key"])
    assert "read as an agent key" in caplog.text and "flat-old-key" not in caplog.text  # named by fingerprint, never shown
    ingest(store, HashingEmbedder())
    with TestClient(create_app(store=store, embedder=HashingEmbedder(), warm_up=False)) as c:
        old = {"X-API-Key": "flat-old-key"}
        assert c.post("/v1/retrieve", json={"query": "refund"}, headers=old).status_code == 200
        assert c.get("/v1/questions", headers=old).status_code == 403


def test_environment_keys_carry_a_name_and_a_role(kb: ContextStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHCONTEXT_API_KEYS", "night-shift:staff:env-staff-key, helpdesk-bot:agent:env-agent-key")
    with TestClient(create_app(store=kb, embedder=HashingEmbedder(), warm_up=False)) as c:
        assert c.get("/v1/questions", headers={"X-API-Key": "env-staff-key"}).status_code == 200
        assert c.get("/v1/questions", headers={"X-API-Key": "env-agent-key"}).status_code == 403
        trace = c.post("/v1/retrieve", json={"query": "refund"}, headers={"X-API-Key": "env-agent-key"}).json()["trace_id"]
        assert c.get(f"/v1/traces/{trace}", headers={"X-API-Key": "env-agent-key"}).json()["client"] == "helpdesk-bot"


def _sign_in(client: TestClient, key: str) -> str | None:
    r = client.post("/staff/login", data={"api_key": key}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return client.cookies.get("freshcontext_staff")


def test_staff_sessions_are_random_server_side_and_end_at_sign_out(client: TestClient) -> None:
    r = client.post("/staff/login", data={"api_key": STAFF["X-API-Key"]}, follow_redirects=False)
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "Secure" in cookie and "samesite=strict" in cookie.lower()
    first = client.cookies.get("freshcontext_staff")
    client.cookies.clear()
    second = _sign_in(client, STAFF["X-API-Key"])
    assert first and second and first != second and len(second) >= 40  # random, not derived from the key
    assert client.get("/staff", follow_redirects=False).status_code == 200
    page = client.get("/staff").text
    csrf = page.split('name="csrf" value="')[1].split('"')[0]
    assert client.post("/staff/logout", data={"csrf": csrf}, follow_redirects=False).headers["location"] == "/staff/login"
    client.cookies.set("freshcontext_staff", second)  # a copy of the cookie kept by someone else
    assert client.get("/staff", follow_redirects=False).headers["location"] == "/staff/login"
    client.cookies.set("freshcontext_staff", first)  # the other session is still signed in
    assert client.get("/staff", follow_redirects=False).status_code == 200


def test_an_agent_key_cannot_open_the_staff_page_nor_use_it_by_header(client: TestClient) -> None:
    assert _sign_in(client, BOT["X-API-Key"]) is None
    assert client.get("/staff", headers=BOT, follow_redirects=False).headers["location"] == "/staff/login"
    assert client.get("/staff", headers=STAFF, follow_redirects=False).headers["location"] == "/staff/login"  # the page is session-only


def test_a_session_expires_and_ends_when_its_key_is_removed(kb: ContextStore) -> None:
    kb.settings.service.session_hours = 1 / 3600  # one second
    with TestClient(create_app(store=kb, embedder=HashingEmbedder(), warm_up=False)) as c:
        cookie = _sign_in(c, STAFF["X-API-Key"])
        assert c.get("/staff", follow_redirects=False).status_code == 200
        time.sleep(1.1)
        c.cookies.set("freshcontext_staff", cookie or "")  # a browser would drop it; the server must refuse it too
        assert c.get("/staff", follow_redirects=False).status_code == 303
    kb.settings.service.session_hours = 12
    with TestClient(create_app(store=kb, embedder=HashingEmbedder(), warm_up=False)) as c:
        cookie = _sign_in(c, STAFF["X-API-Key"])
    kb.settings.api_keys = [k for k in kb.settings.api_keys if k.name != "maria"]
    with TestClient(create_app(store=kb, embedder=HashingEmbedder(), warm_up=False), cookies={"freshcontext_staff": cookie or ""}) as c:
        assert c.get("/staff", follow_redirects=False).status_code == 303


def test_failed_sign_ins_are_rate_limited_per_client(kb: ContextStore) -> None:
    kb.settings.service.login_attempts = 3
    with TestClient(create_app(store=kb, embedder=HashingEmbedder(), warm_up=False)) as c:
        for _ in range(3):
            assert c.post("/staff/login", data={"api_key": "guess"}, follow_redirects=False).status_code == 303
        limited = c.post("/staff/login", data={"api_key": STAFF["X-API-Key"]}, follow_redirects=False)
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "too_many_requests"
        assert int(limited.headers["retry-after"]) > 0
        assert c.cookies.get("freshcontext_staff") is None


def test_the_mcp_tools_are_an_agents_surface(client: TestClient) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
             "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream"}
    assert client.post("/mcp", json=hello, headers=headers).status_code == 401
    refused = client.post("/mcp", json=hello, headers={**headers, **STAFF})
    assert refused.status_code == 403 and refused.json()["error"]["data"]["code"] == "forbidden"
    assert client.post("/mcp", json=hello, headers={**headers, **BOT}).status_code != 403
