"""End to end: eval retrieval and calibrate through the CLI (Dagster ingest, real model), ONNX query encoder parity."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.e2e

DOCS = {
    "refund": ("Refund policy", "You can ask for a refund within 30 days of delivery."),
    "ship": ("Shipping times", "Parcels arrive in 2 to 5 working days with DHL."),
    "pwd": ("Reset your password", "Use the Forgot password link on the sign-in page."),
    "inv": ("Invoices", "Download invoices as PDF files from Billing, then History."),
    "gift": ("Gift cards", "Gift cards never expire and can be used for any order."),
    "del": ("Delete your account", "Settings, Privacy, Delete account removes all your data."),
}
QUERIES = {
    "q1": ("how long do I have to return something for my money back", "refund"),
    "q2": ("when will my package arrive", "ship"),
    "q3": ("I forgot my login password", "pwd"),
    "q4": ("where can I get a PDF of my bill", "inv"),
    "q5": ("do gift vouchers expire", "gift"),
    "q6": ("remove my account and data", "del"),
    "q7": ("what is the capital of peru", "inv"),  # unanswerable: its "relevant" document is wrong on purpose
    "q8": ("best pizza topping", "ship"),
    "q9": ("money back guarantee period", "refund"),
    "q10": ("delivery carrier", "ship"),
    "q11": ("change password", "pwd"),
    "q12": ("football world cup winner", "gift"),
}


def _beir(tmp_path: Path) -> Path:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "corpus.jsonl").write_text("".join(json.dumps({"_id": i, "title": t, "text": x}) + "\n" for i, (t, x) in DOCS.items()))
    (root / "queries.jsonl").write_text("".join(json.dumps({"_id": q, "text": t}) + "\n" for q, (t, _) in QUERIES.items()))
    (root / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, (_, d) in QUERIES.items()))
    return root


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", "--home", str(home), *args], cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def model_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One home for the module: the ONNX export is made once and reused by the CLI runs."""
    return tmp_path_factory.mktemp("model-home")


def test_onnx_query_encoder_matches_the_indexed_model(model_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from context_store.index.embed.model_files import MODELS_DIR_ENV
    from context_store.index.embed.query_encoder import CachedEncoder, build_query_encoder
    from context_store.index.embed.torch_backend import SentenceTransformerEmbedder
    from context_store.settings import EmbeddingConfig

    monkeypatch.delenv(MODELS_DIR_ENV)  # this home's own export: the export and its parity check run here
    encoder = build_query_encoder(EmbeddingConfig(), "onnx", model_home, cache_size=8)
    assert isinstance(encoder, CachedEncoder) and (model_home / "models" / "all-MiniLM-L6-v2.onnx").exists()
    assert json.loads((model_home / "models" / "all-MiniLM-L6-v2.parity.json").read_text())["min_cosine"] > 0.9999
    texts = ["Where is my parcel?", "refund " * 400]  # the second is truncated at 256 word pieces by both
    reference = SentenceTransformerEmbedder().encode(texts)
    assert np.min(np.sum(reference * encoder.encode(texts), axis=1)) > 0.9999
    encoder.encode(texts)
    assert encoder.hits == 2
    # Concurrent requests' queries are encoded in one padded batch: the same vectors as one by one.
    questions = ["Where is my parcel?", "How do I change the email address on my account?", "refund", "Can I pay by invoice in Norway?"]
    onnx = encoder.inner.inner
    alone = np.stack([onnx.encode([q])[0] for q in questions])
    assert np.min(np.sum(alone * onnx.encode(questions), axis=1)) > 0.99999
    with ThreadPoolExecutor(4) as pool:
        together = np.stack([v[0] for v in pool.map(lambda q: encoder.inner.encode([q]), questions * 5)])
    assert np.min(np.sum(np.tile(alone, (5, 1)) * together, axis=1)) > 0.99999


def test_eval_retrieval_and_calibrate_cli(tmp_path: Path, model_home: Path) -> None:
    beir = _beir(tmp_path)
    home = model_home
    out = _cli(home, "eval", "retrieval", "--beir", str(beir), "--json", "--work-home", str(tmp_path / "work"))
    assert out.returncode == 0, out.stderr[-2000:]
    report = json.loads(out.stdout)
    for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10", "ece", "queries", "mode", "by_mode"):
        assert key in report
    assert report["queries"] == 12 and report["mode"] == "hybrid" and set(report["by_mode"]) == {"hybrid", "vector", "text", "rrf"}
    # the default's margin over the best of its own rankers and RRF, and which one that is
    best = max(("vector", "text", "rrf"), key=lambda m: report["by_mode"][m]["ndcg@10"])
    assert report["best_other_mode"] == best
    assert report["margin_over_best_other"] == pytest.approx(report["ndcg@10"] - report["by_mode"][best]["ndcg@10"])
    # 10 answerable queries over 6 short documents: the model finds nearly all of them first
    assert report["by_mode"]["vector"]["mrr@10"] >= 0.75 and 0 <= report["ece"] <= 1
    assert report["by_mode"]["vector"]["recall@100"] == pytest.approx(1.0)
    cal = _cli(home, "calibrate", "--beir", str(beir), "--k", "1", "--json", "--work-home", str(tmp_path / "work"))
    assert cal.returncode == 0, cal.stderr[-2000:]
    summary = json.loads(cal.stdout)
    assert summary["queries"] == 12 and 0 < summary["positive_rate"] < 1 and (home / "calibrator.json").exists()
    from context_store.route.confidence import load_calibrator

    calibrator = load_calibrator(home / "calibrator.json")
    assert calibrator is not None and calibrator.k == 1 and calibrator.samples == 12
    bad = _cli(home, "eval", "retrieval", "--beir", str(tmp_path))
    assert bad.returncode != 0 and "corpus.jsonl" in bad.stderr
