"""Escalation policy, routed questions, outbox and the learning loop on fakes (HashingEmbedder, SQLite, LanceDB)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from context_store._common import utcnow
from context_store.errors import ConfigError, InvalidRequest, NotFound, QuestionConflict
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.learn.answers import index_answers, store_answer, write_answer_file, write_pending_answer_files
from context_store.learn.review import flag_superseded_answers, learning_metrics
from context_store.retrieve.retriever import Retriever, retrieve
from context_store.route.decision import Reason
from context_store.route.outbox import backoff_seconds, deliver_due, outbox_counts, redeliver
from context_store.route.policy import RoutingConfig, SensitiveTopic
from context_store.route.questions import assign_question, get_question, list_questions, route_question, set_status
from context_store.route.respond import Question, Responder, respond
from context_store.route.triggers import escalation_reasons, record_asked
from context_store.route.webhooks import generate_secret, verify
from context_store.store.context_store import ContextStore
from context_store.store.models import AskedQuestion, OutboxMessage, StaffAnswer
from tests.conftest import REFUNDS_V1, open_with_staff_answers

OUT_SECRET = generate_secret()


@pytest.fixture
def kb(sources: dict[str, Path], fake_embedder: HashingEmbedder) -> ContextStore:
    store = open_with_staff_answers(
        sources,
        routing={"outbound_url": "http://127.0.0.1:9/unused", "outbound_secrets": [OUT_SECRET]},
    )
    ingest(store, fake_embedder)
    return store


def codes(reasons: list[Reason]) -> list[str]:
    return [r.code for r in reasons]


def test_human_request_and_sensitive_topics(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    ask = lambda q: codes(escalation_reasons(kb, fake_embedder, retrieve(kb, fake_embedder, q)))  # noqa: E731
    assert ask("How do I ask for a refund?") == []
    assert ask("Please let me talk to a real person") == ["human_requested"]
    assert ask("I will talk to my lawyer about this refund") == ["sensitive_topic"]
    reasons = escalation_reasons(kb, fake_embedder, retrieve(kb, fake_embedder, "my account is locked and this is fraud"))
    assert codes(reasons) == ["sensitive_topic", "sensitive_topic"]
    assert "fraud" in reasons[0].detail and "account_lockout" in reasons[1].detail
    # "human" inside another word or sense is not a request for a person
    assert ask("Does the lamp have a humanly readable manual?") == []


def test_sensitive_examples_match_semantically(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    config = RoutingConfig(
        sensitive_topics=[SensitiveTopic(name="warranty_claim", examples=["my lamp broke after two weeks of light use"])],
        human_phrases=[], human_examples=[], sensitive_similarity=0.7,
    )
    result = retrieve(kb, fake_embedder, "the lamp broke after two weeks of use")
    reasons = escalation_reasons(kb, fake_embedder, result, config=config)
    assert codes(reasons) == ["sensitive_topic"] and reasons[0].score and reasons[0].score >= 0.7
    assert escalation_reasons(kb, fake_embedder, retrieve(kb, fake_embedder, "where is my invoice"), config=config) == []


def test_repeat_contact_window_user_and_conversation(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    config = RoutingConfig(sensitive_topics=[], source_max_age_days={"default": 10_000})
    now = utcnow()
    first = retrieve(kb, fake_embedder, "my refund has not arrived yet", user_id="u-1")
    vec = fake_embedder.encode([first.query])[0]
    record_asked(kb, first, vector=vec, model=fake_embedder.name, decision="answer", conversation_id="c-1", now=now - timedelta(hours=47))
    again = retrieve(kb, fake_embedder, "my refund has still not arrived", user_id="u-1")
    found = [r for r in escalation_reasons(kb, fake_embedder, again, config=config, now=now) if r.code == "repeat_contact"]
    assert len(found) == 1 and "47.0 h ago" in found[0].detail
    # the same conversation is a follow-up, not a repeat; outside the window nothing counts
    same_conv = escalation_reasons(kb, fake_embedder, again, config=config, now=now, conversation_id="c-1")
    assert "repeat_contact" not in codes(same_conv)
    later = escalation_reasons(kb, fake_embedder, again, config=config, now=now + timedelta(hours=2))
    assert "repeat_contact" not in codes(later)
    # another user asking the same thing is not a repeat contact
    other = retrieve(kb, fake_embedder, "my refund has still not arrived", user_id="u-2")
    assert "repeat_contact" not in codes(escalation_reasons(kb, fake_embedder, other, config=config, now=now))
    # an unrelated question by the same user is not either
    unrelated = retrieve(kb, fake_embedder, "where do I download invoices", user_id="u-1")
    assert "repeat_contact" not in codes(escalation_reasons(kb, fake_embedder, unrelated, config=config, now=now))


def test_stale_user_state_and_stale_source(kb: ContextStore, fake_embedder: HashingEmbedder, sources: dict[str, Path]) -> None:
    config = RoutingConfig(sensitive_topics=[])
    result = retrieve(kb, fake_embedder, "refund window", user_id="u-1")
    captured = result.user_captured_at
    assert captured is not None
    fresh = escalation_reasons(kb, fake_embedder, result, config=config, now=captured + timedelta(hours=1))
    assert "stale_user_state" not in codes(fresh)
    stale = escalation_reasons(kb, fake_embedder, result, config=config, now=captured + timedelta(hours=73))
    assert "stale_user_state" in codes(stale)
    # best source older than its source's SLA
    old = escalation_reasons(kb, fake_embedder, result, config=RoutingConfig(sensitive_topics=[], source_max_age_days={"company": 1}),
                             now=utcnow() + timedelta(days=2))
    assert [r for r in old if r.code == "stale_source"][0].detail.startswith("best source company/")
    # a review date in the front matter that has passed
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("title: Refund policy", "title: Refund policy\nreview_by: 2020-01-01"))
    ingest(kb, fake_embedder)
    result = retrieve(kb, fake_embedder, "How many days do I have to ask for a refund?")
    assert result.results[0].doc_id == "company/refunds.md"
    assert "due for review on 2020-01-01" in [r for r in escalation_reasons(kb, fake_embedder, result, config=config) if r.code == "stale_source"][0].detail


def _route(kb: ContextStore, emb: HashingEmbedder, text: str, user: str | None = None, **kw):  # type: ignore[no-untyped-def]
    result = retrieve(kb, emb, text, user_id=user)
    reasons = [Reason("low_confidence", "test", 0.1)]
    return route_question(kb, result, reasons, vector=emb.encode([text])[0], model=emb.name, confidence=0.1, **kw)


def test_grouping_sees_other_processes_questions_and_skips_closed_ones(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    """The open-question cache: a question queued by another process is found once the cache
    re-reads the open ids (at most REFRESH_S later), and a nearest question that has left
    ``open`` meanwhile is skipped for the next nearest open one, not ignored."""
    from sqlalchemy import text as sql

    from context_store.route import grouping

    lamp = "Can I get a refund for a lamp I bought 40 days ago?"
    first = _route(kb, fake_embedder, lamp)
    second = _route(kb, fake_embedder, "Which carrier ships to Norway?")
    # Another process queues a near-duplicate of the second; this process has not seen it yet.
    twin = "q-from-another-process"
    with kb.engine.begin() as conn:
        conn.execute(sql(
            "INSERT INTO routed_questions (question_id, status, text, reasons, context, user_state, model, vector, created_at, "
            "updated_at, ask_count) SELECT :id, 'open', text, reasons, context, user_state, model, vector, created_at, updated_at, 1 "
            "FROM routed_questions WHERE question_id = :src"), {"id": twin, "src": first.question_id})
        conn.execute(sql("UPDATE routed_questions SET status = 'dismissed' WHERE question_id = :id"), {"id": first.question_id})
    cache = grouping._OPEN[(str(kb.engine.url), fake_embedder.name, "escalation")]  # one cache per kind (issue 15)
    assert twin not in cache.vectors
    # The cached nearest (first) was dismissed behind the cache's back: skipped, not grouped with.
    # The twin is unknown until the refresh, so this ask queues a new question...
    cache.refreshed_at = __import__("time").monotonic()
    fresh = _route(kb, fake_embedder, lamp)
    assert not fresh.grouped and first.question_id not in cache.vectors
    # ...and after the refresh interval the twin (and the fresh one) are both candidates.
    cache.refreshed_at -= grouping._OpenVectors.REFRESH_S
    again = _route(kb, fake_embedder, lamp)
    assert again.grouped and again.question_id in (twin, fresh.question_id)
    assert twin in cache.vectors and second.question_id in cache.vectors


def test_open_question_matrix_grows_drops_and_compacts_in_place() -> None:
    """The per-process matrix of open questions: rows added one at a time, dropped ones never
    win again, and compacting keeps every open question findable."""
    import numpy as np

    from context_store.route.grouping import _OpenVectors

    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(300, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    cache = _OpenVectors()
    cache.refreshed_at = float("inf")  # no SQL in this test
    for i, v in enumerate(vectors):
        cache.add(f"q{i}", v)
    assert cache.nearest(None, vectors[7], "m", "escalation") == ("q7", pytest.approx(1.0))  # type: ignore[arg-type]
    for i in range(0, 300, 3):
        cache.drop(f"q{i}")
    assert cache.nearest(None, vectors[9], "m", "escalation")[0] != "q9"  # type: ignore[arg-type]
    for i in range(151, 300):
        cache.drop(f"q{i}")
    assert len(cache.ids) < 300  # compacted
    kept = [i for i in range(1, 151) if i % 3]
    assert all(cache.nearest(None, vectors[i], "m", "escalation")[0] == f"q{i}" for i in kept)  # type: ignore[arg-type]
    assert set(cache.vectors) == {f"q{i}" for i in kept}


def test_routed_question_memory_grouping_and_lifecycle(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    first = _route(kb, fake_embedder, "Can I get a refund for a lamp I bought 40 days ago?", "u-1", trace_id="t-1", conversation_id="c-9")
    q = get_question(kb, first.question_id)
    assert q["status"] == "open" and q["user_id"] == "u-1" and q["user_version_id"] and q["trace_id"] == "t-1"
    assert q["conversation_id"] == "c-9" and q["reasons"][0]["code"] == "low_confidence"
    assert q["context"] and all(c["version_id"].startswith("v-") and c["doc_id"] for c in q["context"])
    assert any("DHL" in f["text"] for f in q["user_state"])
    # a near-duplicate from another user joins the open question; an unrelated one does not
    dup = _route(kb, fake_embedder, "can I get a refund for a lamp I bought 40 days ago", "u-2")
    assert dup.grouped and dup.question_id == first.question_id and dup.ask_count == 2
    other = _route(kb, fake_embedder, "Which carrier ships to Norway?")
    assert not other.grouped and other.question_id != first.question_id
    q = get_question(kb, first.question_id)
    assert [a["user_id"] for a in q["asks"]] == ["u-1", "u-2"]
    assert len(list_questions(kb)) == 2
    assert assign_question(kb, first.question_id, "maria")["owner"] == "maria"
    with pytest.raises(QuestionConflict):
        set_status(kb, first.question_id, "closed")  # open questions are answered or dismissed, not closed
    store_answer(kb, first.question_id, author="maria", text="Yes: goodwill refunds up to 60 days for lamps.")
    with pytest.raises(QuestionConflict):
        store_answer(kb, first.question_id, author="tom", text="another answer")
    with pytest.raises(QuestionConflict):
        assign_question(kb, first.question_id, "tom")
    assert set_status(kb, first.question_id, "closed", note="done")["status"] == "closed"
    assert set_status(kb, other.question_id, "dismissed")["status"] == "dismissed"
    with pytest.raises(QuestionConflict):
        store_answer(kb, other.question_id, author="x", text="y")
    with pytest.raises(NotFound):
        store_answer(kb, "q-nope", author="x", text="y")
    with pytest.raises(InvalidRequest):
        list_questions(kb, status="weird")
    # after the answer, a new near-duplicate is a new question (the old one is not open)
    assert not _route(kb, fake_embedder, "Can I get a refund for a lamp I bought 40 days ago?").grouped
    # every routed question queued one notification, in the same transaction
    with kb.session() as s:
        events = [m.event_type for m in s.exec(__import__("sqlmodel").select(OutboxMessage)).all()]
    assert events.count("routed_question.created") == 3 and events.count("routed_question.asked_again") == 1


def test_answer_becomes_knowledge_and_is_flagged_when_its_source_changes(
    kb: ContextStore, fake_embedder: HashingEmbedder, sources: dict[str, Path]
) -> None:
    routed = _route(kb, fake_embedder, "Can I return a lamp that I bought 40 days ago?", "u-1")
    answer = store_answer(kb, routed.question_id, author="maria", text="Lamps bought 31 to 60 days ago get store credit.")
    assert answer.source_versions and answer.doc_id == f"staff/{routed.question_id}.md"
    path = write_answer_file(kb, answer.answer_id)
    text = path.read_text()
    assert f"question_id: {routed.question_id}" in text and "author: maria" in text and answer.source_versions[0] in text
    assert not any(p.name.startswith(".answer-") for p in path.parent.iterdir())  # the temp file was renamed
    report = index_answers(kb, fake_embedder, [path])
    assert report.retrievable == [answer.answer_id] and report.chunks_embedded >= 1
    top = retrieve(kb, fake_embedder, "Can I return a lamp that I bought 40 days ago?").results[0]
    assert top.kind == "staff_answer" and top.doc_id == answer.doc_id and "store credit" in top.text
    metrics = learning_metrics(kb)
    assert metrics["answers_retrievable"] == 1 and metrics["time_to_knowledge_p50_s"] >= 0
    assert metrics["questions_by_status"]["answered"] == 1
    # the refund article it relied on changes: the answer is flagged, once
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", "45 days"))
    ingest(kb, fake_embedder)
    assert flag_superseded_answers(kb) == 1 and flag_superseded_answers(kb) == 0
    with kb.session() as s:
        stored = s.get(StaffAnswer, answer.answer_id)
        assert stored is not None and stored.needs_review and "company/refunds.md" in (stored.review_reason or "")
    assert learning_metrics(kb)["answers_flagged_stale"] == 1


class BrokenEmbedder(HashingEmbedder):
    def encode(self, texts):  # type: ignore[no-untyped-def]
        raise RuntimeError("model server down")


def test_answer_survives_a_broken_embedder(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    routed = _route(kb, fake_embedder, "Do you ship lamps to Iceland?")
    answer = store_answer(kb, routed.question_id, author="tom", text="Yes, to Iceland with DHL Express in 5 days.")
    assert write_pending_answer_files(kb)  # the file is written even though nothing is indexed
    with pytest.raises(RuntimeError):
        index_answers(kb, BrokenEmbedder())
    assert learning_metrics(kb)["answers_pending_index"] == 1
    ingest(kb, fake_embedder)  # a later ordinary ingest picks it up
    assert index_answers(kb, fake_embedder).retrievable == [answer.answer_id]
    assert "Iceland" in retrieve(kb, fake_embedder, "Do you ship lamps to Iceland?").results[0].text


def test_answers_need_a_staff_source(sources: dict[str, Path], fake_embedder: HashingEmbedder) -> None:
    store = ContextStore.open(sources["home"], company_sources=[{"name": "company", "path": str(sources["company"])}])
    ingest(store, fake_embedder)
    routed = _route(store, fake_embedder, "anything")
    with pytest.raises(ConfigError, match="staff_answer"):
        store_answer(store, routed.question_id, author="a", text="b")
    assert get_question(store, routed.question_id)["status"] == "open"  # nothing half-stored


class _FixedConfidence(Responder):
    """The served policy with a confidence chosen by the test instead of a calibrator."""

    value = 0.0

    def confidence(self, result):  # type: ignore[no-untyped-def]
        return self.value, "fixed by the test"


def _respond(kb: ContextStore, emb: HashingEmbedder, query: str, confidence: float, **kw):  # type: ignore[no-untyped-def]
    responder = _FixedConfidence(kb, Retriever(kb, emb))
    responder.value = confidence
    kb.settings.retrieval.confidence_threshold = 0.5
    return respond(responder, Question(query), **kw)


def test_respond_decides_routes_and_logs(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    verdict = _respond(kb, fake_embedder, "How do I ask for a refund?", 0.9)
    assert verdict.decision.decision == "answer" and verdict.routed is None
    low = _respond(kb, fake_embedder, "What colour is the sky on Mars?", 0.2)
    assert low.decision.decision == "escalate" and codes(low.decision.reasons) == ["low_confidence"] and low.routed is not None
    sensitive = _respond(kb, fake_embedder, "this charge is fraud", 0.99)
    assert sensitive.decision.decision == "escalate" and codes(sensitive.decision.reasons) == ["sensitive_topic"]
    dry = _respond(kb, fake_embedder, "What colour is Mars?", 0.1, record=False)
    assert dry.decision.decision == "escalate" and dry.routed is None and dry.trace_id is None
    with kb.session() as s:
        logged = s.exec(__import__("sqlmodel").select(AskedQuestion)).all()
    assert [a.decision for a in logged] == ["answer", "escalate", "escalate"]
    assert logged[1].question_id == low.routed.question_id and logged[1].reasons == ["low_confidence"]
    assert logged[1].trace_id == low.trace_id  # the trace and the routed question committed together
    m = learning_metrics(kb)
    assert m["escalation_rate"] == pytest.approx(2 / 3) and m["open_questions_by_age"]["<1h"] == 2


class _CountingEmbedder(HashingEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    def encode(self, texts):  # type: ignore[no-untyped-def]
        self.texts += list(texts)
        return super().encode(texts)


def test_respond_embeds_the_question_once(kb: ContextStore) -> None:
    """The routing signals compare the embedding retrieval made; with no query cache, a second
    encode would run the model twice per request."""
    emb = _CountingEmbedder()
    _respond(kb, emb, "Is the Lumora desk lamp dimmable?", 0.2)
    assert emb.texts.count("Is the Lumora desk lamp dimmable?") == 1


class _Endpoint(BaseHTTPRequestHandler):
    fail_first = 2
    received: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers["content-length"]))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        ok = len(type(self).received) > type(self).fail_first
        self.send_response(200 if ok else 503)
        self.end_headers()
        self.wfile.write(b"ok" if ok else b"busy")

    def log_message(self, *args: object) -> None:
        pass


def test_outbox_retries_with_backoff_until_the_endpoint_recovers(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Endpoint)
    _Endpoint.received = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/hook"
    try:
        kb.settings.routing = {"outbound_url": url, "outbound_secrets": [OUT_SECRET]}
        routed = _route(kb, fake_embedder, "Is the Lumora desk lamp dimmable?", "u-1")
        now = utcnow()
        first = deliver_due(kb, secrets=[OUT_SECRET], now=now)
        assert (first.attempted, first.failed) == (1, 1)
        assert deliver_due(kb, secrets=[OUT_SECRET], now=now + timedelta(milliseconds=500)).attempted == 0  # backing off
        second = deliver_due(kb, secrets=[OUT_SECRET], now=now + timedelta(seconds=3))
        assert second.failed == 1
        third = deliver_due(kb, secrets=[OUT_SECRET], now=now + timedelta(seconds=10))
        assert third.delivered == 1 and outbox_counts(kb)["delivered"] == 1
        assert len(_Endpoint.received) == 3
        ids = {h["webhook-id"] for h, _ in _Endpoint.received}
        assert len(ids) == 1  # the same id on every attempt, so the receiver can de-duplicate
        for hdrs, body in _Endpoint.received:  # each attempt is signed and verifiable
            verify([OUT_SECRET], hdrs, body)
        payload = json.loads(_Endpoint.received[-1][1])
        assert payload["type"] == "routed_question.created" and payload["data"]["question_id"] == routed.question_id
        assert payload["data"]["context"] and payload["data"]["asks"][0]["user_id"] == "u-1"
    finally:
        server.shutdown()


def test_outbox_gives_up_after_max_attempts_and_can_redeliver(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    _route(kb, fake_embedder, "Is there a student discount?")  # kb's outbound_url is a closed port
    now = utcnow()
    for i in range(3):
        deliver_due(kb, secrets=[OUT_SECRET], max_attempts=3, timeout=1, now=now + timedelta(hours=i))
    assert outbox_counts(kb) == {"pending": 0, "delivered": 0, "dead": 1}
    with kb.session() as s:
        msg = s.exec(__import__("sqlmodel").select(OutboxMessage)).one()
        assert msg.attempts == 3 and "ConnectError" in (msg.last_error or "")
    redeliver(kb, msg.message_id)
    assert outbox_counts(kb)["pending"] == 1
    delays = [backoff_seconds(n, 2, 3600, "m") for n in range(1, 15)]
    assert all(1 <= d <= 3600 for d in delays) and delays[0] <= 2 and delays[-1] >= 1800
    assert np.all(np.diff(delays[:8]) > 0)


def test_learning_asset_flags_and_reports(kb: ContextStore, fake_embedder: HashingEmbedder, sources: dict[str, Path]) -> None:
    import dagster as dg

    from assets.learning import staff_answer_review, staff_answers_current
    from assets.resources import StoreResource
    from pipeline.definitions import build_defs

    defs = build_defs()

    dg.Definitions.validate_loadable(defs)
    routed = _route(kb, fake_embedder, "Can I return a lamp that I bought 40 days ago?")
    answer = store_answer(kb, routed.question_id, author="maria", text="Store credit until day 60.")
    index_answers(kb, fake_embedder, [write_answer_file(kb, answer.answer_id)])
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", "45 days"))
    ingest(kb, fake_embedder)
    resource = StoreResource(home=str(kb.settings.home))
    result = dg.materialize([staff_answer_review, staff_answers_current], resources={"store": resource})
    assert result.success
    meta = {k: v.value for k, v in result.asset_materializations_for_node("staff_answer_review")[-1].metadata.items()}
    assert meta["answers"] == 1 and meta["newly_flagged"] == 1 and meta["answers_flagged_stale"] == 1
    assert "company/refunds.md" in meta["answers_to_review"]
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN


def test_answer_files_go_through_the_change_journal(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    """The sensor path sees a written answer like any edited file; the warm path marks it applied."""
    from context_store.index.ingest import apply_changes
    from context_store.state import journal

    routed = _route(kb, fake_embedder, "Do you ship lamps to Iceland?")
    answer = store_answer(kb, routed.question_id, author="tom", text="Yes, with DHL Express.")
    path = write_answer_file(kb, answer.answer_id)
    pending = [r for r in journal.read_after(kb, 0, unapplied_only=True) if r.path == str(path.resolve())]
    assert len(pending) == 1 and pending[0].state_kind == "company" and pending[0].source_name == "staff"
    # without the warm path, the journal's own apply (what the sensor's run does) indexes it
    applied = apply_changes(kb, fake_embedder)
    assert applied.company is not None and "staff/" + path.name in applied.company.changed_doc_ids
    assert index_answers(kb, fake_embedder, []).retrievable == [answer.answer_id]
    # the warm path leaves nothing for the sensor
    routed2 = _route(kb, fake_embedder, "Is there a store in Oslo?")
    answer2 = store_answer(kb, routed2.question_id, author="tom", text="No, online only.")
    index_answers(kb, fake_embedder, [write_answer_file(kb, answer2.answer_id)])
    assert not [r for r in journal.read_after(kb, 0, unapplied_only=True) if r.source_name == "staff"]


def test_warm_path_indexes_only_its_answers_not_an_ingest_backlog(
    kb: ContextStore, fake_embedder: HashingEmbedder, sources: dict[str, Path]
) -> None:
    from context_store.state.documents import sync_company_sources
    from context_store.store.models import Document

    # an ingest has versioned an edit and not indexed it yet when the answer arrives
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("30 days", "45 days"))
    sync_company_sources(kb)
    routed = _route(kb, fake_embedder, "Do you ship lamps to Iceland?")
    answer = store_answer(kb, routed.question_id, author="tom", text="Yes, with DHL Express.")
    report = index_answers(kb, fake_embedder, [write_answer_file(kb, answer.answer_id)])
    assert report.retrievable == [answer.answer_id]
    with kb.session() as s:
        refunds = s.get(Document, "company/refunds.md")
        assert refunds is not None and refunds.indexed_version_id != refunds.current_version_id  # left to the ingest


def test_asks_joined_in_one_transaction_each_count(kb: ContextStore, fake_embedder: HashingEmbedder) -> None:
    """Group commit writes several requests in one transaction: each join counts its ask (a single
    UPDATE on an open question, read back), and a question that left ``open`` is never joined."""
    from context_store.store.database import session_scope

    lamp = "Can I get a refund for a lamp I bought 40 days ago?"
    first = _route(kb, fake_embedder, lamp)
    with session_scope(kb.engine) as session:
        counts = [_route(kb, fake_embedder, lamp, session=session).ask_count for _ in range(2)]
    assert counts == [2, 3]
    q = get_question(kb, first.question_id)
    assert q["ask_count"] == 3 and len(q["asks"]) == 3 and q["updated_at"] > q["created_at"]
    set_status(kb, first.question_id, "dismissed")
    assert not _route(kb, fake_embedder, lamp).grouped


def test_a_phrase_hit_names_the_first_phrase_of_the_list_that_matches() -> None:
    from context_store.route.triggers import _phrase_hit

    phrases = ["speak to a human", "human", "agent"]
    assert _phrase_hit("Agent please, I want to speak to a human", phrases) == "speak to a human"  # list order, not text order
    assert _phrase_hit("an agentless setup", phrases) is None  # word boundaries hold for the combined search too
    assert _phrase_hit("can’t reach an agent", ["can't reach"]) == "can't reach"
    assert _phrase_hit("anything", []) is None
