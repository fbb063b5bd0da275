"""End to end on real Dagster, SQLite, LanceDB and the real all-MiniLM-L6-v2 model."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from assets.resources import EmbedderResource, StoreResource
from context_store.index.embed.factory import build_embedder
from context_store.index.embed.onnx_backend import OnnxEncoder
from context_store.retrieve.retriever import retrieve
from context_store.settings import EmbeddingConfig
from pipeline.definitions import INGEST_ASSETS, INGEST_CHECKS
from tests.conftest import REFUNDS_V1, REPO

# the tests using ``sources`` run on SQLite + local LanceDB and on PostgreSQL + S3 LanceDB
pytestmark = [pytest.mark.e2e, pytest.mark.all_backends]


@pytest.fixture
def encoded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[int]:
    """Counts the texts handed to the real model's encode (ONNX, as the resource builds it), per call."""
    assert isinstance(build_embedder(EmbeddingConfig(), tmp_path), OnnxEncoder)  # exported before counting starts
    calls: list[int] = []
    real = OnnxEncoder.encode

    def counting(self, texts):  # type: ignore[no-untyped-def]
        calls.append(len(texts))
        return real(self, texts)

    monkeypatch.setattr(OnnxEncoder, "encode", counting)
    return calls


def run(sources: dict[str, Path]) -> tuple[dg.ExecuteInProcessResult, StoreResource]:
    store = StoreResource(home=str(sources["home"]), company_dirs=[str(sources["company"])], user_dirs=[str(sources["users"])])
    result = dg.materialize([*INGEST_ASSETS, *INGEST_CHECKS], resources={"store": store, "embedder": EmbedderResource()})
    assert result.success
    assert all(c.passed for c in result.get_asset_check_evaluations()), result.get_asset_check_evaluations()
    return result, store


def meta(result: dg.ExecuteInProcessResult, asset: str) -> dict[str, object]:
    mats = result.asset_materializations_for_node(asset)
    return {k: v.value for k, v in mats[-1].metadata.items()}


def test_materialize_edit_delete_rename_and_user_update(sources, encoded) -> None:  # type: ignore[no-untyped-def]
    result, store = run(sources)
    first = meta(result, "company_chunk_index")
    facts = meta(result, "user_state_index")["facts_embedded"]
    assert first["chunks_embedded"] + facts == sum(encoded) and first["chunks_embedded"] > 0 and facts > 0
    assert first["dagster/row_count"] == first["chunks_embedded"]
    cs = store.open()
    embedder = EmbedderResource().for_store(cs)

    # edit one paragraph: only that chunk is embedded, and only the new text is served
    (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("within 30 days", "within 14 days"))
    encoded.clear()
    result, _ = run(sources)
    assert meta(result, "company_documents")["changed"] == 1
    assert meta(result, "company_chunk_index")["chunks_embedded"] == 1 == sum(encoded)
    hits = retrieve(cs, embedder, "How many days do I have to ask for a refund?", k=10).results
    assert "14 days" in hits[0].text
    assert not any("30 days" in h.text for h in hits)

    # rename: no embedding at all
    shutil.move(sources["company"] / "billing" / "invoices.md", sources["company"] / "billing" / "invoice-download.md")
    encoded.clear()
    result, _ = run(sources)
    assert meta(result, "company_documents")["renamed"] == 1 and sum(encoded) == 0
    assert retrieve(cs, embedder, "where can I download my invoice", k=1).results[0].doc_id == "company/billing/invoice-download.md"

    # delete: the text is no longer returned
    (sources["company"] / "billing" / "invoice-download.md").unlink()
    run(sources)
    assert not any("Invoices are under Billing" in h.text for h in retrieve(cs, embedder, "download invoice pdf", k=10).results)

    # user update: a new version, old facts gone
    (sources["users"] / "u-1.json").write_text(
        '{"user_id": "u-1", "captured_at": "2026-11-22T10:00:00Z", "account": {"status": "active", "plan": "Plus"},'
        ' "orders": [{"order_id": "A-1", "status": "delivered", "carrier": "DHL"}]}'
    )
    result, _ = run(sources)
    assert meta(result, "user_snapshots")["changed"] == 1
    facts = " ".join(f.text for f in retrieve(cs, embedder, "where is my parcel", user_id="u-1").user_state)
    assert "delivered" in facts and "shipped" not in facts


@pytest.mark.parametrize("backend", ["local"], indirect=True)  # input handling does not depend on the store
def test_bad_files_are_skipped_with_reasons_in_metadata(sources) -> None:  # type: ignore[no-untyped-def]
    (sources["company"] / "photo.md").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00")
    (sources["company"] / "legacy.txt").write_bytes("r\xe9sum\xe9".encode("latin-1"))
    (sources["company"] / "huge.md").write_text("# Huge\n\n" + "x" * 2_100_000)
    (sources["users"] / "broken.json").write_text('{"user_id": ')
    (sources["users"] / "anonymous.json").write_text('{"account": {"status": "active"}}')
    result, _ = run(sources)
    company = meta(result, "company_documents")
    users = meta(result, "user_snapshots")
    assert company["skipped"] == 3 and company["new"] == 2
    assert users["skipped"] == 2 and users["new"] == 2
    table = str(company["skipped_inputs"])
    assert "binary" in table and "invalid_utf8" in table and "too_large" in table
    assert "missing_user_id" in str(users["skipped_inputs"]) and "malformed_json" in str(users["skipped_inputs"])


def _cli(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "--home", str(home), *args]


def test_cli_ingest_killed_mid_run_is_repaired_by_the_next_run(tmp_path: Path) -> None:
    corpus = tmp_path / "company"
    for copy in range(4):  # ~190 documents: long enough to be killed while embedding
        shutil.copytree(REPO / "demo" / "company", corpus / f"copy{copy}")
    users = tmp_path / "users"
    shutil.copytree(REPO / "demo" / "users", users)
    home = tmp_path / "home"
    home.mkdir()
    # small waves: the killed run has committed some embeddings and still has work left
    (home / "freshcontext.yaml").write_text("index_wave_chunks: 64\n")
    env = {**os.environ, "FRESHCONTEXT_HOME": str(home)}
    env.pop("DAGSTER_HOME", None)
    proc = subprocess.Popen(
        _cli(home, "ingest", "--company-dir", str(corpus), "--user-dir", str(users), "--no-progress"),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO,
    )
    deadline = time.monotonic() + 240
    killed = False
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with sqlite3.connect(home / "freshcontext.db", timeout=1) as db:
                row = db.execute("SELECT count(*) FROM ingest_runs WHERE stage='index' AND status='running'").fetchone()
                embedded = db.execute("SELECT count(*) FROM embeddings").fetchone()[0]
        except sqlite3.Error:
            row, embedded = (0,), 0
        if row[0] and embedded > 0:
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.2)
    proc.wait(timeout=30)
    assert killed, "the ingest finished before it could be killed; grow the corpus"

    done = subprocess.run(
        _cli(home, "ingest", "--company-dir", str(corpus), "--user-dir", str(users), "--no-progress", "--json"),
        env=env, capture_output=True, text=True, cwd=REPO, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout)
    assert summary["checks"] == {
        "company_chunk_index:index_matches_store": True,
        "user_state_index:index_matches_store": True,
        "staff_answer_review:staff_answers_current": True,  # the learning loop's check runs after every ingest
    }
    # the repair run reused what the killed run had embedded
    assert summary["assets"]["company_chunk_index"]["chunks_reused"] > 0
    status = subprocess.run(_cli(home, "status", "--json"), env=env, capture_output=True, text=True, cwd=REPO, timeout=120)
    counts = json.loads(status.stdout)["counts"]
    assert counts["documents_current"] == 4 * 48 and counts["pending_documents"] == 0
    assert any(r["status"] == "failed" or r["finished_at"] is None for r in json.loads(status.stdout)["last_runs"])

    q = subprocess.run(
        _cli(home, "query", "how do I reset my password", "--user", "u-1001", "--json", "--k", "3"),
        env=env, capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    payload = json.loads(q.stdout)
    assert len(payload["results"]) == 3 and {"doc_id", "version_id", "text", "score"} <= set(payload["results"][0])
    assert payload["user"]["facts"] and payload["user"]["user_id"] == "u-1001"
    assert payload["decision"] in ("answer", "escalate") and payload["trace_id"] is None  # the API's shape; nothing recorded
