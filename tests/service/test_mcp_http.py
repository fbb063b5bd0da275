"""The MCP server at /mcp, over real HTTP (uvicorn) with the SDK's own client: keys, tools, schemas, errors, notifications."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import jsonschema
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.client.subscriptions import ResourceUpdated
from mcp.shared.exceptions import MCPError
from mcp.types import ResourceUpdatedNotification

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.state import sync_company_sources
from context_store.store.context_store import ContextStore
from service.app import create_app
from tests.conftest import REFUNDS_V1, open_on_sources, raised_inside

KEY = "agent-key"
DOC = "company/refunds.md"
URI = f"freshcontext://documents/{DOC}"
TURNS = [{"role": "user", "text": "where is my refund?"}, {"role": "agent", "text": "Refunds take 30 days."},
         {"role": "user", "text": "I need a person"}]


@pytest.fixture
def mcp_store(sources: dict[str, Path]) -> ContextStore:
    store = open_on_sources(
        sources,
        api_keys=[KEY, {"name": "maria", "key": "staff-key", "role": "staff"}],  # KEY: a bare key, an agent named by its fingerprint
        retrieval={"refresh_interval_seconds": 0.0, "confidence_threshold": 0.5},
        mcp={"notify_interval_seconds": 0.1, "allowed_hosts": ["127.0.0.1:*", "agents.example.com"]},
    )
    ingest(store, HashingEmbedder())
    return store


@pytest.fixture
def base_url(mcp_store: ContextStore) -> Iterator[str]:
    yield from served(mcp_store)


def served(store: ContextStore) -> Iterator[str]:
    """The whole API under uvicorn on a free port, in a thread of this process (a fixture's body)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(store=store, embedder=HashingEmbedder()), host="127.0.0.1",
                                           port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def run(fn: Callable[[], Awaitable[Any]]) -> Any:
    return anyio.run(fn)


def session(url: str, key: str | None = KEY, **kwargs: Any) -> Any:
    """An SDK client for ``url``/mcp with ``key`` in X-API-Key (the SDK takes headers on its httpx2 client)."""
    headers = {"X-API-Key": key} if key else {}
    http = httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300))
    return http, Client(streamable_http_client(f"{url}/mcp", http_client=http), **kwargs)


@pytest.mark.parametrize("key, message", [(None, "missing API key"), ("wrong", "invalid API key")])
def test_without_a_good_key_nothing_is_listed(base_url: str, key: str | None, message: str) -> None:
    async def connect() -> None:
        http, client = session(base_url, key)
        async with http, client:
            await client.list_tools()

    with pytest.raises(BaseException) as raised:
        run(connect)
    error = raised_inside(raised.value, MCPError)
    assert isinstance(error, MCPError) and message in error.message and error.data["code"] == "unauthorized"
    r = httpx.post(f"{base_url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["error"]["message"].startswith("missing API key")


def test_an_agent_key_lists_and_calls_tools_with_schemas(base_url: str) -> None:
    async def go() -> tuple[Any, dict[str, Any]]:
        http, client = session(base_url)
        async with http, client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            results = {
                "retrieve_context": await client.call_tool("retrieve_context", {"query": "how long is the refund window", "user_id": "u-1"}),
                "get_document": await client.call_tool("get_document", {"doc_id": DOC}),
                "request_human": await client.call_tool("request_human", {"conversation_id": "c-1", "reason": "asked for a person",
                                                                          "transcript": TURNS, "user_id": "u-1"}),
            }
            return tools, results

    tools, results = run(go)
    assert set(tools) == {"retrieve_context", "get_document", "request_human", "report_outcome"}
    assert "version_id" in tools["retrieve_context"].description and "escalate" in tools["retrieve_context"].description
    for name, result in results.items():
        assert not result.is_error, result.content
        jsonschema.Draft202012Validator(tools[name].output_schema).validate(result.structured_content)  # typed, as declared
        assert json.loads(result.content[0].text) == result.structured_content
    retrieved = results["retrieve_context"].structured_content
    assert retrieved["results"][0]["doc_id"] == DOC and retrieved["results"][0]["version_id"].startswith("v-")
    assert retrieved["user"]["user_id"] == "u-1" and retrieved["decision"] in ("answer", "escalate")
    assert results["get_document"].structured_content["current"] and "30 days" in results["get_document"].structured_content["text"]


def test_retrieve_context_and_the_http_api_agree(base_url: str) -> None:
    body = {"query": "how long is the refund window", "user_id": "u-1", "k": 3}
    http_body = httpx.post(f"{base_url}/v1/retrieve", json=body, headers={"X-API-Key": KEY}).json()

    async def go() -> dict[str, Any]:
        http, client = session(base_url)
        async with http, client:
            return (await client.call_tool("retrieve_context", body)).structured_content

    mcp_body = run(go)
    trace = httpx.get(f"{base_url}/v1/traces/{mcp_body['trace_id']}", headers={"X-API-Key": KEY}).json()
    assert trace["client"].startswith("key-")  # the MCP call is traced under its key's fingerprint, like HTTP's
    if http_body["routed_question"] is not None:  # the same question escalated twice: the second joins the first
        assert mcp_body["routed_question"]["question_id"] == http_body["routed_question"]["question_id"]
        assert mcp_body["routed_question"]["grouped"] and mcp_body["routed_question"]["ask_count"] == 2
    for b in (http_body, mcp_body):  # what differs between two calls by nature: ids, clocks, timings
        for key in ("trace_id", "served_at", "timings_ms", "routed_question"):
            b.pop(key)
        for hit in b["results"]:
            hit.pop("age_seconds")
        b["user"].pop("age_seconds")
    assert mcp_body == http_body


def test_request_human_makes_a_question_whose_working_memory_holds_the_transcript(base_url: str) -> None:
    async def go() -> dict[str, Any]:
        http, client = session(base_url)
        async with http, client:
            await client.call_tool("retrieve_context", {"query": "refund window", "conversation_id": "c-7"})
            first = await client.call_tool("request_human", {"conversation_id": "c-7", "reason": "upset", "transcript": TURNS})
            again = await client.call_tool("request_human", {"conversation_id": "c-7", "reason": "still upset", "transcript": TURNS})
            assert again.structured_content["joined"] and again.structured_content["question_id"] == first.structured_content["question_id"]
            return first.structured_content

    handed = run(go)
    q = httpx.get(f"{base_url}/v1/questions/{handed['question_id']}", headers={"X-API-Key": "staff-key"}).json()
    assert q["kind"] == "handoff" and [t["text"] for t in q["transcript"]] == [t["text"] for t in TURNS]
    assert q["trace_id"] == handed["trace_id"] and q["context"] and q["ask_count"] == 2


def test_bad_input_gets_specific_errors_and_no_session_is_hurt(base_url: str) -> None:
    async def go() -> dict[str, str]:
        http, client = session(base_url)
        http2, bystander = session(base_url)
        async with http, client, http2, bystander:
            assert (await bystander.list_tools()).tools
            calls = {
                "unknown tool": ("drop_tables", {}),
                "missing argument": ("retrieve_context", {}),
                "wrong type": ("retrieve_context", {"query": "refunds", "k": "many"}),
                "k out of range": ("retrieve_context", {"query": "refunds", "k": 1000}),
                "oversized transcript": ("request_human", {"conversation_id": "c", "reason": "r", "transcript": [TURNS[0]] * 201}),
                "unknown user": ("request_human", {"conversation_id": "c", "reason": "r", "transcript": TURNS, "user_id": "u-404"}),
                "unknown document": ("get_document", {"doc_id": "company/nope.md"}),
            }
            texts = {}
            for label, (name, args) in calls.items():
                result = await client.call_tool(name, args)
                assert result.is_error, label
                texts[label] = result.content[0].text
            with pytest.raises(MCPError, match="no resource|Unknown resource|nope"):
                await client.read_resource("freshcontext://documents/company/nope.md")
            # the failing session and another one both keep working
            assert not (await client.call_tool("get_document", {"doc_id": DOC})).is_error
            assert not (await bystander.call_tool("retrieve_context", {"query": "refund window"})).is_error
            return texts

    texts = run(go)
    assert "Unknown tool: drop_tables" in texts["unknown tool"]
    assert "query" in texts["missing argument"] and "Field required" in texts["missing argument"]
    assert "k" in texts["wrong type"] and "valid integer" in texts["wrong type"]
    assert "invalid_request (400)" in texts["k out of range"]
    assert "transcript_too_large (413)" in texts["oversized transcript"] and "at most 200" in texts["oversized transcript"]
    assert "unknown_user (404)" in texts["unknown user"] and "u-404" in texts["unknown user"]
    assert "not_found (404)" in texts["unknown document"]


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")  # the 2025-era client, on purpose
def test_a_document_edit_notifies_subscribers_of_both_protocol_eras(base_url: str, mcp_store: ContextStore, sources: dict[str, Path]) -> None:
    legacy_seen: list[str] = []

    async def on_message(message: Any) -> None:
        if isinstance(message, ResourceUpdatedNotification):
            legacy_seen.append(message.params.uri)

    async def go() -> tuple[ResourceUpdated, str, str]:
        http, client = session(base_url)
        http2, legacy = session(base_url, mode="legacy", message_handler=on_message)
        async with http, client, http2, legacy:
            before = json.loads((await client.read_resource(URI)).contents[0].text)
            await legacy.subscribe_resource(URI)
            async with client.listen(resource_subscriptions=[URI]) as sub:
                (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", "14 days"))
                await anyio.to_thread.run_sync(sync_company_sources, mcp_store)
                with anyio.fail_after(10):
                    event = await anext(aiter(sub))
                    while not legacy_seen:
                        await anyio.sleep(0.05)
            after = json.loads((await client.read_resource(URI)).contents[0].text)
            return event, before["version_id"], after

    event, old_version, after = run(go)
    assert event == ResourceUpdated(uri=URI) and legacy_seen == [URI]
    assert after["version_id"] != old_version and "14 days" in after["text"] and after["age_seconds"] >= 0


def test_get_document_reads_a_version_at_a_time(base_url: str, mcp_store: ContextStore, sources: dict[str, Path]) -> None:
    async def read(args: dict[str, Any]) -> dict[str, Any]:
        http, client = session(base_url)
        async with http, client:
            return (await client.call_tool("get_document", args)).structured_content

    old = run(lambda: read({"doc_id": DOC}))
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", "14 days"))
    sync_company_sources(mcp_store)
    then = run(lambda: read({"doc_id": DOC, "as_of": old["valid_from"]}))
    now = run(lambda: read({"doc_id": DOC}))
    assert then["version_id"] == old["version_id"] and not then["current"] and "30 days" in then["text"]
    assert now["current"] and "14 days" in now["text"]


def test_allowed_hosts_are_configured_not_only_localhost(base_url: str) -> None:
    headers = {"X-API-Key": KEY, "Accept": "application/json, text/event-stream"}
    probe = {"jsonrpc": "2.0", "id": 1, "method": "ping"}
    assert httpx.post(f"{base_url}/mcp", json=probe, headers={**headers, "Host": "evil.example.net"}).status_code == 421
    ok = httpx.post(f"{base_url}/mcp", json=probe, headers={**headers, "Host": "agents.example.com"})
    assert ok.status_code != 421


def test_the_mcp_settings_take_hosts_from_the_environment(mcp_store: ContextStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main
    from service.mcp import mcp_config

    monkeypatch.setenv("FRESHCONTEXT_MCP_ALLOWED_HOSTS", "kb.example.com, kb.internal:8000")
    config = mcp_config(mcp_store.settings)
    assert config.allowed_hosts[-2:] == ["kb.example.com", "kb.internal:8000"] and "agents.example.com" in config.allowed_hosts
    assert config.notify_interval_seconds == 0.1 and config.host_check
    result = CliRunner().invoke(main, ["--home", str(mcp_store.settings.home), "mcp"])
    assert result.exit_code == 2 and "pass --stdio" in result.output
