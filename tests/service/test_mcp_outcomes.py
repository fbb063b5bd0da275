"""report_outcome over real HTTP (uvicorn) with the SDK's own client: the outcomes API's core, keys and refusals."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.store import utcnow
from context_store.store.context_store import ContextStore
from tests.conftest import open_on_sources
from tests.service.test_mcp_http import run, served, session

AGENT, OTHER, ADMIN = "agent-key", "other-agent-key", "admin-key"
API_KEYS = [{"name": "bot", "key": AGENT, "role": "agent"}, {"name": "other-bot", "key": OTHER, "role": "agent"},
            {"name": "ops", "key": ADMIN, "role": "admin"}]
QUERY = "how long is the refund window"
SDK = "Error executing tool report_outcome: "  # what the SDK puts before a tool error's message


@pytest.fixture
def outcome_store(sources: dict[str, Path]) -> ContextStore:
    store = open_on_sources(
        sources,
        api_keys=API_KEYS,
        user_state_max_age_hours=24 * 3650,  # the fixture's snapshots are old; this file is about outcomes
        retrieval={"refresh_interval_seconds": 0.0, "confidence_threshold": 0.0},  # every plain question is answered
    )
    ingest(store, HashingEmbedder())
    return store


@pytest.fixture
def base_url(outcome_store: ContextStore) -> Iterator[str]:
    yield from served(outcome_store)


def calls(url: str, key: str, steps: list[tuple[str, dict[str, Any]]]) -> tuple[dict[str, Any], list[Any]]:
    """Run ``steps`` (tool, arguments) in one MCP session; the declared tools and each call's result."""
    async def go() -> tuple[dict[str, Any], list[Any]]:
        http, client = session(url, key)
        async with http, client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            return tools, [await client.call_tool(name, args) for name, args in steps]

    return run(go)


def retrieved(url: str, key: str = AGENT, **args: Any) -> str:
    _, [result] = calls(url, key, [("retrieve_context", {"query": QUERY, "user_id": "u-1", **args})])
    assert not result.is_error, result.content
    return result.structured_content["trace_id"]


def http_error(url: str, body: dict[str, Any], key: str = AGENT) -> str:
    """What ``POST /v1/outcomes`` answers ``body`` with, written as a tool error reads: ``code (status): message``."""
    r = httpx.post(f"{url}/v1/outcomes", json=body, headers={"X-API-Key": key})
    assert r.status_code >= 400, r.text
    return f"{r.json()['error']['code']} ({r.status_code}): {r.json()['error']['message']}"


def test_an_outcome_reported_over_mcp_is_on_the_trace_once(base_url: str) -> None:
    trace = retrieved(base_url, conversation_id="c-1")
    report = {"trace_id": trace, "outcome": "resolved", "csat": 5, "thumbs": "up", "note": "thanks", "event_id": "evt-1"}
    tools, (first, again) = calls(base_url, AGENT, [("report_outcome", report), ("report_outcome", report)])
    assert "escalated_by_user" in tools["report_outcome"].description and "event_id" in tools["report_outcome"].description
    for result in (first, again):
        assert not result.is_error, result.content
        jsonschema.Draft202012Validator(tools["report_outcome"].output_schema).validate(result.structured_content)
    stored = first.structured_content
    assert stored["trace_id"] == trace and stored["conversation_id"] == "c-1" and stored["source"] == "platform"
    assert not stored["duplicate"] and stored["review_question_id"] is None
    assert again.structured_content == {**stored, "duplicate": True}  # the first result; nothing stored twice
    listed = httpx.get(f"{base_url}/v1/traces/{trace}", headers={"X-API-Key": AGENT}).json()["outcomes"]
    assert [(o["event_id"], o["outcome"], o["csat"], o["thumbs"], o["client"]) for o in listed] == [
        ("evt-1", "resolved", 5, "up", "bot")]
    metrics = httpx.get(f"{base_url}/metrics", headers={"X-API-Key": ADMIN}).text
    assert 'freshcontext_outcomes_total{outcome="resolved",source="platform"} 1.0' in metrics  # counted once, as over HTTP


def test_by_conversation_without_event_id_and_a_failed_answer_opens_a_review(base_url: str) -> None:
    trace = retrieved(base_url, conversation_id="c-2")
    _, (by_conversation,) = calls(base_url, AGENT, [("report_outcome", {"conversation_id": "c-2", "outcome": "unresolved"})])
    out = by_conversation.structured_content
    assert not by_conversation.is_error and out["trace_id"] == trace and out["event_id"].startswith("mcp-")
    assert out["review_question_id"]  # a bot answer that failed is reviewed, as over HTTP
    _, (retry,) = calls(base_url, AGENT, [("report_outcome", {"conversation_id": "c-2", "outcome": "unresolved",
                                                              "event_id": out["event_id"]})])
    assert retry.structured_content["duplicate"] and retry.structured_content["review_question_id"] == out["review_question_id"]
    listed = httpx.get(f"{base_url}/v1/traces/{trace}", headers={"X-API-Key": AGENT}).json()["outcomes"]
    assert [o["event_id"] for o in listed] == [out["event_id"]]


def test_bad_reports_get_the_http_apis_codes_and_messages_and_no_session_is_hurt(base_url: str) -> None:
    trace = retrieved(base_url)
    theirs = retrieved(base_url, key=OTHER)
    future = (utcnow() + timedelta(hours=2)).isoformat()
    bad = {
        "unknown trace": {"event_id": "e-1", "trace_id": "tr-nope", "outcome": "resolved"},
        "unknown conversation": {"event_id": "e-2", "conversation_id": "c-nope", "outcome": "resolved"},
        "another key's trace": {"event_id": "e-3", "trace_id": theirs, "outcome": "resolved"},
        "bad outcome": {"event_id": "e-4", "trace_id": trace, "outcome": "great"},
        "derived outcome": {"event_id": "e-5", "trace_id": trace, "outcome": "repeat_contact"},
        "csat out of range": {"event_id": "e-6", "trace_id": trace, "outcome": "resolved", "csat": 9},
        "bad thumbs": {"event_id": "e-7", "trace_id": trace, "outcome": "resolved", "thumbs": "sideways"},
        "no target": {"event_id": "e-8", "outcome": "resolved"},
        "bad time": {"event_id": "e-9", "trace_id": trace, "outcome": "resolved", "at": "yesterday"},
    }
    steps = [("report_outcome", args) for args in bad.values()]
    steps += [("report_outcome", {"event_id": "e-10", "trace_id": trace, "outcome": "resolved", "at": future}),
              ("report_outcome", {"event_id": "e-11", "trace_id": trace, "outcome": "resolved", "csat": "five"}),
              ("report_outcome", {"event_id": "e-12", "trace_id": trace, "outcome": "abandoned"}),  # the session still works
              ("report_outcome", {"event_id": "e-12", "trace_id": trace, "outcome": "resolved"})]
    _, results = calls(base_url, AGENT, steps)
    texts = [r.content[0].text.removeprefix(SDK) for r in results]
    assert [r.is_error for r in results] == [True] * 11 + [False, True]
    for (label, body), result in zip(bad.items(), results):
        assert result.content[0].text == SDK + http_error(base_url, body), label  # the very code and message of POST /v1/outcomes
    assert texts[0].startswith("unknown_trace (404): no response with trace_id 'tr-nope'")
    assert texts[2] == texts[0].replace("'tr-nope'", repr(theirs))  # another agent's response reads as one never recorded
    assert texts[5] == "invalid_csat (400): csat must be a whole number from 1 to 5, got 9"
    assert texts[9].startswith("outcome_in_future (400): at ") and "ahead of the server's clock" in texts[9]
    assert "csat" in texts[10] and "valid integer" in texts[10]  # a wrong type is the SDK's argument validation
    assert texts[12].startswith("event_id_reused (409): event_id 'e-12' was already used for a different outcome")
    _, (admin,) = calls(base_url, ADMIN, [("report_outcome", {"event_id": "e-13", "trace_id": theirs, "outcome": "resolved"})])
    assert not admin.is_error and admin.structured_content["trace_id"] == theirs  # an admin reports on any response
    listed = httpx.get(f"{base_url}/v1/traces/{trace}", headers={"X-API-Key": AGENT}).json()["outcomes"]
    assert [o["event_id"] for o in listed if o["source"] == "platform"] == ["e-12"]  # no refused report was stored
