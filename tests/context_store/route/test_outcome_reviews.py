"""Derived outcomes and retroactive escalation: a confident answer that failed goes to a person, once, with its memory."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from fastapi.testclient import TestClient
from sqlmodel import select

from context_store._common import utcnow
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.retrieve import Retriever
from context_store.route import OutcomeReport, Question, Responder, get_question, list_questions, record_outcome, respond
from context_store.store.context_store import ContextStore
from context_store.store.models import OutboxMessage, Outcome, RetrievalTrace
from pipeline.cli import main
from service.app import create_app
from tests.conftest import open_on_sources

KEY = {"X-API-Key": "staff-key"}


class _Fixed(Responder):
    """The served policy at a confidence the test chooses (the threshold is 0.5)."""

    value = 0.86

    def confidence(self, result):  # type: ignore[no-untyped-def]
        return self.value, "fixed by the test"


@pytest.fixture
def kb(sources: dict[str, Path]) -> ContextStore:
    store = open_on_sources(
        sources,
        api_keys=[{"name": "support", "key": "staff-key", "role": "staff"}],
        user_state_max_age_hours=24 * 3650,
        routing={"outbound_url": "http://127.0.0.1:9/unused", "outbound_secrets": ["whsec_" + "a" * 32]},
    )
    ingest(store, HashingEmbedder())
    return store


def answer(kb: ContextStore, query: str, *, confidence: float = 0.86, **question):  # type: ignore[no-untyped-def]
    return ask_at(kb, query, None, confidence=confidence, **question)


def ask_at(kb: ContextStore, query: str, now, *, confidence: float = 0.86, **question):  # type: ignore[no-untyped-def]
    responder = _Fixed(kb, Retriever(kb, HashingEmbedder()))
    responder.value = confidence
    return respond(responder, Question(query, **question), now=now)


def outcome(kb: ContextStore, event_id: str, trace_id: str, kind: str, *, hours: float = 0.0, **extra):  # type: ignore[no-untyped-def]
    at = utcnow() + timedelta(hours=hours)
    return record_outcome(kb, OutcomeReport(event_id=event_id, trace_id=trace_id, outcome=kind, at=at, **extra), now=at)


def reviews(kb: ContextStore) -> list[dict]:
    return list_questions(kb, status="open", kind="review")


@pytest.mark.parametrize(("kind", "extra", "opens"), [
    ("unresolved", {}, True),
    ("reopened", {}, True),
    ("resolved", {"thumbs": "down"}, True),
    ("resolved", {"csat": 2}, True),
    ("resolved", {"csat": 3}, False),
    ("resolved", {"thumbs": "up", "csat": 5}, False),
    ("abandoned", {}, False),
])
def test_which_outcomes_open_a_review(kb: ContextStore, kind: str, extra: dict, opens: bool) -> None:
    served = answer(kb, "How long is the refund window?", user_id="u-1")
    assert served.decision.decision == "answer"
    recorded = outcome(kb, "e1", served.trace_id, kind, hours=6, **extra)
    assert (recorded.review_question_id is not None) is opens
    assert len(reviews(kb)) == int(opens)


def test_a_review_carries_the_answers_working_memory_and_is_announced(kb: ContextStore) -> None:
    served = answer(kb, "How long is the refund window?", user_id="u-1", conversation_id="conv-5")
    recorded = outcome(kb, "e1", served.trace_id, "unresolved", hours=6, note="still no refund")
    q = get_question(kb, recorded.review_question_id)
    assert q["kind"] == "review" and q["text"] == "How long is the refund window?" and q["trace_id"] == served.trace_id
    assert q["user_id"] == "u-1" and q["conversation_id"] == "conv-5" and q["confidence"] == pytest.approx(0.86)
    assert q["context"][0]["doc_id"] == "company/refunds.md" and "30 days" in q["context"][0]["text"]  # texts rebuilt from SQL
    assert q["context"][0]["version_id"] == served.result.results[0].version_id
    review = q["review"]
    assert review["summary"] == "answered at 0.86, the user came back 6 h later"
    assert review["decision"] == "answer" and review["threshold"] == 0.5 and review["outcome"] == "unresolved"
    assert review["versions"][0]["version_id"] == served.result.results[0].version_id
    assert [r["code"] for r in q["reasons"]] == ["answer_failed"] and "unresolved" in q["reasons"][0]["detail"]
    with kb.session() as s:
        events = [(m.event_type, m.payload["data"].get("kind")) for m in s.exec(select(OutboxMessage)).all()]
    assert ("routed_question.created", "review") in events


def test_one_review_per_answer_and_none_for_an_escalation(kb: ContextStore) -> None:
    served = answer(kb, "How long is the refund window?", user_id="u-1")
    first = outcome(kb, "e1", served.trace_id, "resolved", hours=1, thumbs="down")
    second = outcome(kb, "e2", served.trace_id, "unresolved", hours=2)
    assert first.review_question_id and second.review_question_id is None
    assert len(reviews(kb)) == 1
    with kb.session() as s:
        assert s.get(RetrievalTrace, served.trace_id).review_question_id == first.review_question_id
    escalated = answer(kb, "Where are the invoices?", confidence=0.1)
    assert escalated.decision.decision == "escalate"
    assert outcome(kb, "e3", escalated.trace_id, "unresolved", hours=1).review_question_id is None  # a person has it already


def test_a_repeat_contact_marks_the_earlier_answer_and_opens_its_review(kb: ContextStore) -> None:
    now = utcnow()
    first = ask_at(kb, "How long is the refund window?", now, user_id="u-1", conversation_id="conv-1")
    assert first.decision.decision == "answer"
    later = ask_at(kb, "How long is the refund window?", now + timedelta(hours=6), user_id="u-1", conversation_id="conv-2")
    assert [r.code for r in later.decision.reasons] == ["repeat_contact"]
    assert [(d.trace_id, d.outcome, d.source) for d in later.derived] == [(first.trace_id, "repeat_contact", "derived")]
    with kb.session() as s:
        row = s.exec(select(Outcome).where(Outcome.trace_id == first.trace_id)).one()
    assert row.detail == {"repeat_trace_id": later.trace_id, "similarity": 1.0}
    review = get_question(kb, later.derived[0].review_question_id)
    assert review["kind"] == "review" and review["review"]["summary"] == "answered at 0.86, the user came back 6 h later"
    # the repeat itself was escalated as before; the two never group (different kinds)
    assert later.routed is not None and later.routed.question_id != review["question_id"]
    # a follow-up in the same conversation is not a repeat contact: nothing derived
    same = ask_at(kb, "How long is the refund window?", now + timedelta(hours=7), user_id="u-2", conversation_id="conv-3")
    again = ask_at(kb, "How long is the refund window?", now + timedelta(hours=8), user_id="u-2", conversation_id="conv-3")
    assert same.derived == [] and again.derived == []


def test_reviews_of_similar_answers_group_together(kb: ContextStore) -> None:
    a = answer(kb, "How long is the refund window?", user_id="u-1")
    b = answer(kb, "How long is the refund window?", user_id="u-2")
    ra = outcome(kb, "ea", a.trace_id, "unresolved", hours=1)
    rb = outcome(kb, "eb", b.trace_id, "reopened", hours=2)
    assert ra.review_question_id == rb.review_question_id
    q = get_question(kb, ra.review_question_id)
    assert q["ask_count"] == 2 and {x["trace_id"] for x in q["asks"]} == {a.trace_id, b.trace_id}


def test_staff_see_the_kind_and_when_the_user_came_back(kb: ContextStore) -> None:
    served = answer(kb, "How long is the refund window?", user_id="u-1")
    outcome(kb, "e1", served.trace_id, "resolved", hours=6, csat=1)
    with TestClient(create_app(store=kb, embedder=HashingEmbedder())) as client:
        client.post("/staff/login", data={"api_key": "staff-key"})  # the page's session cookie
        page = client.get("/staff")
        assert page.status_code == 200
        assert 'data-kind="review"' in page.text and '<span class="kind" data-key="kind">review</span>' in page.text
        assert "answered at 0.86, the user came back 6 h later" in page.text and "CSAT 1" in page.text
        listed = client.get("/v1/questions?status=open", headers=KEY).json()["questions"]
        assert [q["kind"] for q in listed] == ["review"]


def test_the_outcomes_command_lists_and_exports(kb: ContextStore, tmp_path: Path) -> None:
    served = answer(kb, "How long is the refund window?", user_id="u-1")
    outcome(kb, "e1", served.trace_id, "resolved", csat=5)
    outcome(kb, "e2", served.trace_id, "reopened", hours=1)
    home = str(kb.settings.home)
    runner = CliRunner()
    listed = runner.invoke(main, ["--home", home, "outcomes"])
    assert listed.exit_code == 0, listed.output
    assert "resolved" in listed.output and "reopened" in listed.output and "-> review q-" in listed.output
    as_json = json.loads(runner.invoke(main, ["--home", home, "outcomes", "--json"]).output)
    assert as_json["count"] == 2 and as_json["by_kind"] == {"reopened": 1, "resolved": 1}
    assert as_json["outcomes"][0]["confidence"] == pytest.approx(0.86) and as_json["outcomes"][0]["decision"] == "answer"
    out = tmp_path / "o.csv"
    assert runner.invoke(main, ["--home", home, "outcomes", "--csv", str(out), "--jsonl", str(tmp_path / "o.jsonl")]).exit_code == 0
    lines = out.read_text().splitlines()
    assert lines[0].startswith("event_id,trace_id") and len(lines) == 3
    assert [json.loads(x)["event_id"] for x in (tmp_path / "o.jsonl").read_text().splitlines()] == ["e1", "e2"]
    later = (utcnow() + timedelta(minutes=30)).isoformat()
    only_later = json.loads(runner.invoke(main, ["--home", home, "outcomes", "--json", "--since", later]).output)
    assert [o["event_id"] for o in only_later["outcomes"]] == ["e2"]
    bad = runner.invoke(main, ["--home", home, "outcomes", "--since", "last week"])
    assert bad.exit_code != 0 and "not a date" in bad.output
