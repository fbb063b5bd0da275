"""Golden sets, retrieval checks, history and the promotion gate, on fakes (HashingEmbedder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select

from context_store.errors import InputRejected, StoreError
from context_store.index.candidate import build_candidate
from context_store.index.drift import index_drift
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.measure.gate import evaluate_gate, last_gate, pending_change, promote, run_gate
from context_store.measure.golden import evaluate_golden
from context_store.measure.quality import (
    baselines,
    evaluate_retrieval_quality,
    history,
    retrieval_checks,
    store_retrieval_quality,
)
from context_store.measure.questions import load_questions as load_golden
from context_store.retrieve.retriever import Retriever
from context_store.settings import QualityConfig
from context_store.store.context_store import ContextStore
from context_store.store.models import ArchivedChunk, ChunkRecord, IndexDeployment, PromotionDecision

QUESTIONS = [
    {"id": "g1", "text": "refund window days delivery", "answerable": True, "expected_doc_ids": ["company/refunds.md"],
     "answer_changed": True, "expected_phrase": "14 days", "old_phrase": "30 days"},
    {"id": "g2", "text": "download invoices pdf billing history", "answerable": True, "expected_doc_ids": ["company/billing/invoices.md"]},
    {"id": "g3", "text": "request refund settings orders", "answerable": True, "expected_doc_ids": ["company/refunds.md"]},
    {"id": "g4", "text": "what is the weather in Lisbon", "answerable": False, "expected_doc_ids": []},
]


def _golden(path: Path, rows: list[dict] = QUESTIONS) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _open(store: ContextStore, **overrides: object) -> ContextStore:
    """The same home opened again (as a new process would), with config changes."""
    return ContextStore.open(store.settings.home, **{
        "company_sources": [s.model_dump() for s in store.settings.company_sources],
        "user_sources": [s.model_dump() for s in store.settings.user_sources], **overrides,
    })


@pytest.fixture
def edited(store: ContextStore, sources: dict[str, Path], tmp_path: Path) -> ContextStore:
    """Ingested, then the refund window edited (30 → 14 days) and ingested again; a golden set configured."""
    embedder = HashingEmbedder()
    ingest(store, embedder)
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("within 30 days", "within 14 days"))
    ingest(store, embedder)
    golden = _golden(tmp_path / "golden.jsonl")
    opened = _open(store, quality={"golden_sets": [{"name": "mini", "path": str(golden)}], "ndcg_floor": 0.3, "recall_floor": 0.3, "mrr_floor": 0.3})
    opened.configured.save()  # later opens of this home see the golden set
    return opened


def test_load_golden_names_the_bad_line(tmp_path: Path) -> None:
    assert len(load_golden(_golden(tmp_path / "ok.jsonl"))) == 4
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(QUESTIONS[0]) + "\n{not json\n")
    with pytest.raises(InputRejected, match=r"bad.jsonl:2"):
        load_golden(bad)
    bad.write_text(json.dumps({"id": "x", "text": "q", "answerable": True, "expected_doc_ids": []}) + "\n")
    with pytest.raises(InputRejected, match="needs expected_doc_ids"):
        load_golden(bad)
    bad.write_text(json.dumps({**QUESTIONS[0], "old_phrase": None}) + "\n")
    with pytest.raises(InputRejected, match="old_phrase"):
        load_golden(bad)
    with pytest.raises(InputRejected, match="does not exist"):
        load_golden(tmp_path / "missing.jsonl")


def test_golden_metrics_and_the_current_answer_winning(edited: ContextStore, tmp_path: Path) -> None:
    retriever = Retriever(edited, HashingEmbedder())
    result = evaluate_golden(retriever, load_golden(tmp_path / "golden.jsonl"), set_name="mini", k=10)
    m = result.metrics
    assert m["queries"] == 3 and m["unanswerable"] == 1
    assert m["recall@10"] == 1.0 and 0.5 <= m["ndcg@10"] <= 1.0
    # the edit is served (14 days), the superseded text (30 days) never is
    assert m["answer_changed_current_wins"] == 1.0 and m["answer_changed_stale_served"] == 0.0
    # asking for the old phrase as "current" flips it: the check can fail
    flipped = [{**QUESTIONS[0], "expected_phrase": "30 days", "old_phrase": "14 days"}]
    bad = evaluate_golden(retriever, load_golden(_golden(tmp_path / "flipped.jsonl", flipped)), set_name="x", k=10)
    assert bad.metrics["answer_changed_current_wins"] == 0.0 and bad.metrics["answer_changed_stale_served"] == 1.0
    assert bad.worst(1)[0].stale_served


def test_checks_floor_and_tolerance_against_the_last_good_run(edited: ContextStore) -> None:
    report = evaluate_retrieval_quality(edited, HashingEmbedder())
    outcomes = retrieval_checks(report, edited.settings.quality, baselines(edited, report))
    assert outcomes and all(o.passed for o in outcomes), [o.detail for o in outcomes if not o.passed]
    store_retrieval_quality(edited, report, outcomes)
    good = report.sets[0].metrics["ndcg@10"]
    # a later run 0.1 below the last good one fails the tolerance, though it is above the floor
    report.sets[0].metrics["ndcg@10"] = good - 0.1
    later = retrieval_checks(report, edited.settings.quality, baselines(edited, report))
    failed = [o for o in later if not o.passed]
    assert [o.name for o in failed] == ["mini: ndcg@10 within tolerance of last good"]
    # below the floor fails the floor
    assert not all(o.passed for o in retrieval_checks(report, QualityConfig(ndcg_floor=0.99), None))
    # no set configured, or a set that cannot be read, fails instead of passing silently
    empty = evaluate_retrieval_quality(edited, HashingEmbedder(), sets=[])
    assert not retrieval_checks(empty, edited.settings.quality)[0].passed
    assert [r.set_name for r in history(edited, "retrieval")] == ["mini"]


def test_an_unreadable_set_is_a_failed_check_not_a_crash(edited: ContextStore, tmp_path: Path) -> None:
    (tmp_path / "golden.jsonl").write_text("{oops\n")
    report = evaluate_retrieval_quality(edited, HashingEmbedder())
    assert report.sets[0].error and "malformed_json" in report.sets[0].error
    outcomes = retrieval_checks(report, edited.settings.quality)
    assert len(outcomes) == 1 and not outcomes[0].passed


def test_a_config_change_keeps_the_serving_index_until_promoted(edited: ContextStore) -> None:
    assert pending_change(edited) is None
    changed = _open(edited, embedding={"model": "other-model"})
    # the store still serves (and ingests with) the promoted model; the new one is only configured
    assert changed.settings.embedding.model == "all-MiniLM-L6-v2"
    assert changed.configured.embedding.model == "other-model"
    assert pending_change(changed) == changed.configured.index_code_version()
    assert changed.index.company_table_name == "company_chunks"


def test_gate_promotes_an_equal_candidate_and_records_the_decision(edited: ContextStore) -> None:
    live = HashingEmbedder()
    changed = _open(edited, embedding={"model": "hashing-v2"})
    candidate = HashingEmbedder(name="hashing-v2")  # same vectors, another name: re-embedded, equally good
    build, gate, decision = run_gate(changed, live, candidate)
    assert build is not None and build.documents == 2 and build.chunks_embedded > 0
    assert gate is not None and gate.passed, gate.reason
    assert decision is not None and decision.decision == "promoted"
    reopened = _open(edited, embedding={"model": "hashing-v2"})
    assert pending_change(reopened) is None
    assert reopened.index.company_table_name.startswith("company_chunks__")
    assert reopened.settings.embedding.model == "hashing-v2"
    assert all(d.ok for d in index_drift(reopened))  # SQL agrees with what the new tables hold
    hits = Retriever(reopened, candidate).retrieve("refund window", k=1).results
    assert hits and "14 days" in hits[0].text
    # a rebuild with nothing changed embeds nothing
    again = build_candidate(_open(edited, embedding={"model": "hashing-v3"}), HashingEmbedder(name="hashing-v2"))
    assert again.chunks_embedded == 0


def test_wrong_model_and_emptied_table_are_rejected_and_not_promoted(edited: ContextStore) -> None:
    live = HashingEmbedder()
    changed = _open(edited, embedding={"model": "broken-model"})
    build = build_candidate(changed, HashingEmbedder(dim=64, name="broken-model"))
    # queried with another model than the one that embedded it (wrong model): rankings turn to noise
    wrong = evaluate_gate(changed, live, _Scrambled(), build.store)
    assert not wrong.passed
    with pytest.raises(StoreError, match="did not pass"):
        promote(changed, wrong)
    # emptied table
    table = build.store.index.table(build.store.index.company_table_name)
    table.delete("true")
    empty = evaluate_gate(changed, live, HashingEmbedder(name="broken-model"), build.store)
    assert not empty.passed and "current documents missing" in empty.reason
    gate = last_gate(changed)
    assert gate is not None and not gate.passed
    with changed.session() as s:
        decisions = s.exec(select(PromotionDecision)).all()
        serving = s.exec(select(IndexDeployment).where(IndexDeployment.status == "serving")).one()
    assert [d.decision for d in decisions] == ["rejected", "rejected"]
    assert serving.company_table == "company_chunks"  # the old index keeps serving
    assert _open(edited).index.company_table_name == "company_chunks"


def test_a_chunker_promotion_rechunks_current_versions_and_archives_the_old_chunks(edited: ContextStore) -> None:
    from context_store.route.decision import decide
    from context_store.route.traces import record_trace, replay

    result = Retriever(edited, HashingEmbedder()).retrieve("refund window", k=2)
    trace_id = record_trace(edited, result, decide(result, 0.9, 0.5), confidence_source="test")
    changed = _open(edited, chunking={"max_chars": 200})
    _, gate, decision = run_gate(changed, HashingEmbedder(), HashingEmbedder())
    assert gate is not None and decision is not None, gate.reason if gate else None
    reopened = _open(edited, chunking={"max_chars": 200})
    assert reopened.settings.chunking.max_chars == 200
    assert all(d.ok for d in index_drift(reopened))
    with reopened.session() as s:
        assert s.exec(select(ArchivedChunk)).all()
        assert s.exec(select(ChunkRecord)).all()
    # what was served before the switch still replays, verified, from the archived chunks
    replayed = replay(reopened, trace_id)
    assert replayed["verified"] and replayed["results"] and "days" in replayed["results"][0]["text"]


class _Scrambled:
    """A model that embeds queries unlike the documents were embedded (the wrong model at query time)."""

    name = "scrambled"
    dim = 64

    def encode(self, texts: list[str]):  # type: ignore[no-untyped-def]
        return HashingEmbedder().encode([t[::-1] + " zzz" for t in texts])


def test_a_configured_beir_set_is_ingested_beside_and_scored(edited: ContextStore, tmp_path: Path) -> None:
    beir = tmp_path / "tiny-beir"
    beir.mkdir()
    docs = {"d1": "Lamps ship from Rotterdam within two days.", "d2": "Refunds are paid to the original card.",
            "d3": "Reset your password from the sign-in page."}
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps({"_id": k, "title": k, "text": v}) for k, v in docs.items()))
    (beir / "queries.jsonl").write_text("\n".join(json.dumps({"_id": q, "text": t}) for q, t in
                                                  (("q1", "where do lamps ship from"), ("q2", "refunds original card"))))
    (beir / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t1\n")
    from context_store.settings import GoldenSetConfig

    report = evaluate_retrieval_quality(edited, HashingEmbedder(), sets=[GoldenSetConfig(name="tiny", path=beir, format="beir")])
    s = report.sets[0]
    assert s.error is None and s.metrics["queries"] == 2 and s.metrics["ndcg@10"] > 0.5
    assert (edited.settings.home / "quality" / "beir").is_dir()  # its own side home; the live store is untouched
    assert edited.index.count(edited.index.company_table_name) < 10


def test_promote_cli_with_nothing_pending(edited: ContextStore) -> None:
    import subprocess
    import sys

    from tests.conftest import REPO

    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "--home", str(edited.settings.home), "promote", "--json"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["decision"] == "nothing pending"


def test_a_writer_opened_before_a_promotion_refuses_to_index(edited: ContextStore, sources: dict[str, Path]) -> None:
    from context_store.index.documents import index_pending_documents

    old_writer = _open(edited)  # e.g. the watcher, opened before the switch
    changed = _open(edited, embedding={"model": "hashing-v2"})
    _, gate, decision = run_gate(changed, HashingEmbedder(), HashingEmbedder(name="hashing-v2"))
    assert decision is not None, gate.reason if gate else None
    with pytest.raises(StoreError, match="restart it"):
        index_pending_documents(old_writer, HashingEmbedder())


def test_routing_quality_on_a_golden_set_and_its_ece_check(edited: ContextStore) -> None:
    from context_store.measure.quality import evaluate_routing_quality, routing_checks

    # the 4-question set is too small to cross-fit (folds need 10 labelled queries each); make it 24
    rows = [{**q, "id": f"{q['id']}-{i}"} for i in range(6) for q in QUESTIONS]
    _golden(Path(edited.settings.quality.golden_sets[0].path), rows)
    sets = evaluate_routing_quality(edited, HashingEmbedder())
    assert sets[0].error is None, sets[0].error
    m = sets[0].metrics
    assert m["queries"] == 24 and m["answerable"] == 18 and 0.0 <= m["ece"] <= 1.0 and "coverage_at_target" in m
    assert all(o.passed for o in routing_checks(sets, QualityConfig(routing_ece_ceiling=1.0)))
    assert not any(o.passed for o in routing_checks(sets, QualityConfig(routing_ece_ceiling=0.0)) if m["ece"] > 0)
    assert not routing_checks([], QualityConfig())[0].passed


def test_learning_checks_flag_an_answer_that_never_became_knowledge(edited: ContextStore) -> None:
    from datetime import timedelta

    from context_store._common import utcnow
    from context_store.learn.review import learning_metrics
    from context_store.measure.quality import learning_checks
    from context_store.store.models import RoutedQuestion, StaffAnswer

    config = QualityConfig(time_to_knowledge_p95_ceiling_s=600)
    assert all(o.passed for o in learning_checks(edited, learning_metrics(edited), config))  # nothing yet: nothing late
    now = utcnow()
    with edited.session() as s:
        s.add(RoutedQuestion(question_id="q-1", text="can I pay with Klarna", vector=b"\0" * 8, status="answered"))
        s.add(RoutedQuestion(question_id="q-2", text="is there a student discount", vector=b"\0" * 8, status="answered"))
        s.flush()
        s.add(StaffAnswer(answer_id="a-1", question_id="q-1", author="ana", text="Yes, in 3 instalments.",
                          received_at=now - timedelta(seconds=900), retrievable_at=now - timedelta(seconds=870)))
        s.add(StaffAnswer(answer_id="a-2", question_id="q-2", author="ana", text="No.", received_at=now - timedelta(hours=2)))
    metrics = learning_metrics(edited)
    assert metrics["time_to_knowledge_p50_s"] == pytest.approx(30, abs=1)
    ttk, waiting = learning_checks(edited, metrics, config)
    assert ttk.passed and not waiting.passed and waiting.value == 1
