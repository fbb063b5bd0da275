"""End to end: an agent starts `freshcontext mcp --stdio` (real model, real stores) and talks to it with the SDK's client."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.subscriptions import ResourceUpdated
from mcp.shared.exceptions import MCPError

from context_store.index.embed import build_embedder
from context_store.index.ingest import ingest
from context_store.state import sync_company_sources
from context_store.store.context_store import ContextStore
from tests.conftest import REFUNDS_V1, REPO, open_on_sources, raised_inside

pytestmark = pytest.mark.e2e
KEY = "stdio-agent-key"
URI = "freshcontext://documents/company/refunds.md"


@pytest.fixture
def home(sources: dict[str, Path]) -> Path:
    store = open_on_sources(sources, api_keys=[KEY], mcp={"notify_interval_seconds": 0.2})
    store.settings.save()  # the server process reads the home's freshcontext.yaml
    ingest(store, build_embedder(store.settings.embedding, store.settings.home))
    return sources["home"]


def server(home: Path, key: str | None) -> StdioServerParameters:
    # the SDK gives the child an allow-listed environment: what it needs is passed on purpose
    env = {k: os.environ[k] for k in ("FRESHCONTEXT_MODELS_DIR", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if k in os.environ}
    if key is not None:
        env["FRESHCONTEXT_API_KEY"] = key
    return StdioServerParameters(command=sys.executable, args=["-m", "pipeline.cli", "--home", str(home), "mcp", "--stdio"],
                                 env=env, cwd=str(REPO))


def test_a_local_agent_lists_retrieves_hands_off_and_hears_of_an_edit(home: Path, sources: dict[str, Path]) -> None:
    async def go() -> dict[str, Any]:
        async with Client(server(home, KEY)) as client:
            tools = sorted(t.name for t in (await client.list_tools()).tools)
            retrieved = await client.call_tool("retrieve_context", {"query": "how long do I have to ask for a refund", "user_id": "u-1",
                                                                    "conversation_id": "c-1"})
            reported = await client.call_tool("report_outcome", {"trace_id": retrieved.structured_content["trace_id"],
                                                                 "outcome": "escalated_by_user", "event_id": "evt-stdio-1"})
            handed = await client.call_tool("request_human", {"conversation_id": "c-1", "reason": "wants a person", "user_id": "u-1",
                                                              "transcript": [{"role": "user", "text": "a person please"}]})
            async with client.listen(resource_subscriptions=[URI]) as sub:
                (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", "14 days"))
                await anyio.to_thread.run_sync(sync_company_sources, ContextStore.open(home))
                with anyio.fail_after(20):
                    event = await anext(aiter(sub))
            current = json.loads((await client.read_resource(URI)).contents[0].text)
            return {"tools": tools, "retrieved": retrieved, "reported": reported, "handed": handed, "event": event,
                    "current": current}

    out = anyio.run(go)
    assert out["tools"] == ["get_document", "report_outcome", "request_human", "retrieve_context"]
    assert not out["retrieved"].is_error and out["retrieved"].structured_content["results"][0]["doc_id"] == "company/refunds.md"
    assert out["retrieved"].structured_content["user"]["snapshot_version_id"]
    reported = out["reported"].structured_content  # the stdio key's agent reports on its own response
    assert not out["reported"].is_error and reported["trace_id"] == out["retrieved"].structured_content["trace_id"]
    handed = out["handed"].structured_content
    assert handed["kind"] == "handoff" and handed["trace_id"] == out["retrieved"].structured_content["trace_id"]
    assert out["event"] == ResourceUpdated(uri=URI) and "14 days" in out["current"]["text"]
    from context_store.route import get_question

    question = get_question(ContextStore.open(home), handed["question_id"])
    assert question["transcript"][0]["text"] == "a person please" and question["user_state"]


def test_without_a_key_every_request_is_refused_with_what_to_set(home: Path) -> None:
    async def go() -> None:
        async with Client(server(home, None)) as client:
            await client.call_tool("retrieve_context", {"query": "refunds"})

    with pytest.raises(BaseException) as raised:
        anyio.run(go)
    error = raised_inside(raised.value, MCPError)
    assert isinstance(error, MCPError) and error.message.startswith("missing API key: set FRESHCONTEXT_API_KEY")
