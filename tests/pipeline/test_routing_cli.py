"""The routing commands of the CLI, in-process through click's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.retrieve.retriever import retrieve
from context_store.route.decision import Reason
from context_store.route.questions import route_question
from context_store.store.context_store import ContextStore
from pipeline.cli import main


def test_questions_answer_and_learning_from_the_cli(sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHCONTEXT_HOME", str(sources["home"]))
    emb = HashingEmbedder()
    staff = tmp_path / "staff"
    staff.mkdir()
    store = ContextStore.open(
        sources["home"],
        company_sources=[{"name": "company", "path": str(sources["company"])}, {"name": "staff", "path": str(staff), "kind": "staff_answer"}],
    )
    store.settings.save()
    ingest(store, emb)
    text = "Do you ship to Iceland?"
    qid = route_question(store, retrieve(store, emb, text), [Reason("low_confidence", "t", 0.1)],
                         vector=emb.encode([text])[0], model=emb.name).question_id
    home = ["--home", str(sources["home"])]
    runner = CliRunner()
    listed = runner.invoke(main, [*home, "questions", "list"])
    assert listed.exit_code == 0 and qid in listed.output and "low_confidence" in listed.output
    shown = json.loads(runner.invoke(main, [*home, "questions", "show", qid]).output)
    assert shown["text"] == text and shown["context"]
    assert "no routed question" in runner.invoke(main, [*home, "questions", "show", "q-x"]).output
    answered = runner.invoke(main, [*home, "questions", "answer", qid, "Yes, with DHL.", "--author", "tom", "--no-index"])
    assert answered.exit_code == 0 and (staff / f"{qid}.md").exists()
    again = runner.invoke(main, [*home, "questions", "answer", qid, "No.", "--author", "tom", "--no-index"])
    assert again.exit_code != 0 and "answered" in again.output
    assert runner.invoke(main, [*home, "questions", "dismiss", qid]).exit_code != 0  # answered questions are closed, not dismissed
    metrics = json.loads(runner.invoke(main, [*home, "learning", "--json"]).output)
    assert metrics["answers"] == 1 and metrics["answers_pending_index"] == 1
    assert runner.invoke(main, ["webhook-secret"]).output.startswith("whsec_")
    report = json.loads(runner.invoke(main, [*home, "outbox"]).output)
    assert report["attempted"] == 0 and report["counts"]["pending"] == 0
