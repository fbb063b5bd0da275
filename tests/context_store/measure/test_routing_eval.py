"""Routing evaluation: metrics on hand-computed cases, the CLINC150 converter, a small run."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest

from context_store.errors import InputRejected
from context_store.index.embed.fake import HashingEmbedder
from context_store.measure.ir_metrics import aurc, coverage_at_precision
from context_store.measure.ir_metrics import expected_calibration_error as ece
from context_store.measure.questions import load_questions
from context_store.measure.routing_eval import escalation_scores, run_routing_eval
from context_store.measure.routing_sets import convert_clinc150
from tests.conftest import SHARED_DATA

# a routing query file: answerable questions may leave expected_doc_ids out
load_queries = partial(load_questions, answerable_need_docs=False)


def test_coverage_at_precision_by_hand() -> None:
    scores = [0.9, 0.8, 0.7, 0.6, 0.5]
    correct = [True, True, False, True, False]
    # prefixes: 1/1, 2/2, 2/3, 3/4, 3/5
    assert coverage_at_precision(scores, correct, 0.95) == pytest.approx(2 / 5)
    assert coverage_at_precision(scores, correct, 0.75) == pytest.approx(4 / 5)
    assert coverage_at_precision(scores, correct, 0.5) == pytest.approx(1.0)
    # tied scores cannot be split: the top two tie and one is wrong
    assert coverage_at_precision([0.9, 0.9, 0.1], [True, False, True], 0.95) == 0.0


def test_aurc_ece_and_escalation_by_hand() -> None:
    # risks of the prefixes: 0, 0, 1/3, 1/4, 2/5 -> mean
    assert aurc([0.9, 0.8, 0.7, 0.6, 0.5], [True, True, False, True, False]) == pytest.approx((0 + 0 + 1 / 3 + 1 / 4 + 2 / 5) / 5)
    assert aurc([0.9, 0.1], [True, False]) < aurc([0.1, 0.9], [True, False])
    # two bins: [0.9, 0.9] all correct -> |1-0.9|; [0.2, 0.2] half correct -> |0.5-0.2|
    assert ece([0.9, 0.9, 0.2, 0.2], [True, True, True, False]) == pytest.approx(0.5 * 0.1 + 0.5 * 0.3)
    precision, recall = escalation_scores([True, True, False, False], [False, True, False, True])
    assert (precision, recall) == (0.5, 0.5)


def test_bad_query_files(tmp_path: Path) -> None:
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"text": "a", "answerable": true}\n{"text": "b"}\n')
    with pytest.raises(InputRejected, match="q.jsonl:2"):
        load_queries(bad)
    bad.write_text("{nope\n")
    with pytest.raises(InputRejected, match="malformed_json"):
        load_queries(bad)


def _tiny_set(tmp_path: Path) -> tuple[Path, Path]:
    kb = tmp_path / "kb"
    kb.mkdir()
    docs = {
        "refunds": ("Refunds", "refund money back return purchase thirty days"),
        "shipping": ("Shipping", "shipping delivery carrier parcel tracking days"),
        "password": ("Password reset", "password reset email login account forgot"),
    }
    (kb / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": t, "text": x}) + "\n" for k, (t, x) in docs.items()))
    queries = []
    for _ in range(6):
        queries += [
            {"text": "how do I get my money back refund", "answerable": True, "expected_doc_ids": ["refunds"]},
            {"text": "track my parcel delivery", "answerable": True, "expected_doc_ids": ["shipping"]},
            {"text": "forgot my password reset email", "answerable": True, "expected_doc_ids": ["password"]},
            {"text": "what is the weather in paris", "answerable": False},
            {"text": "recommend a good pizza place", "answerable": False},
        ]
    q = tmp_path / "queries.jsonl"
    q.write_text("".join(json.dumps(x) + "\n" for x in queries))
    return kb, q


def test_run_on_a_tiny_set(tmp_path: Path) -> None:
    kb, q = _tiny_set(tmp_path)
    report = run_routing_eval(kb, q, HashingEmbedder(), folds=3).as_dict()
    for key in ("escalation_precision", "escalation_recall", "coverage_at_90", "coverage_at_95", "aurc", "ece", "queries", "baseline"):
        assert key in report
    assert report["queries"] == 30 and report["answerable"] == 18 and report["settings"]["documents"] == 3
    assert set(report["baseline"]) >= {"escalation_precision", "escalation_recall", "coverage_at_90", "coverage_at_95", "aurc", "ece"}
    assert 0 <= report["aurc"] <= 1 and 0 <= report["ece"] <= 1


@pytest.mark.skipif(not (SHARED_DATA / "clinc150").is_dir(), reason="needs ../shared/data/clinc150")
def test_clinc150_converter(tmp_path: Path) -> None:
    summary = convert_clinc150(SHARED_DATA / "clinc150", tmp_path / "out", kb_domains=3, queries_per_intent=2, oos_queries=20)
    corpus = [json.loads(line) for line in (tmp_path / "out" / "corpus.jsonl").read_text().splitlines()]
    queries = load_queries(tmp_path / "out" / "queries.jsonl")
    assert len(corpus) == summary["documents"] == 45
    ids = {d["_id"] for d in corpus}
    answerable = [x for x in queries if x.answerable]
    assert len(answerable) == 90 and all(x.expected_doc_ids and x.expected_doc_ids[0] in ids for x in answerable)
    assert len(queries) - len(answerable) == 7 * 15 * 2 + 20
    # training utterances build the KB, test utterances are the queries: none is both
    kb_text = "\n".join(d["text"] for d in corpus)
    assert not any(f"- {x.text}\n" in kb_text + "\n" for x in answerable)


def test_cli_reports_bad_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from pipeline.cli import main

    monkeypatch.setenv("FRESHCONTEXT_HOME", str(tmp_path / "home"))  # main() exports it; restored afterwards
    kb, q = _tiny_set(tmp_path)
    (kb / "corpus.jsonl").unlink()
    out = CliRunner().invoke(main, ["eval", "routing", "--kb", str(kb), "--queries", str(q)])
    assert out.exit_code != 0 and "no corpus.jsonl" in out.output
    q.write_text('{"text": "x"}\n')
    out = CliRunner().invoke(main, ["eval", "routing", "--kb", str(kb), "--queries", str(q)])
    assert out.exit_code != 0 and "answerable" in out.output
