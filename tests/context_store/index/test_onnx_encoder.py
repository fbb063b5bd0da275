"""The chunk embedder: ONNX by default when it has a home, the same vectors as sentence-transformers, no torch import."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from context_store.errors import ConfigError
from context_store.index.embed.factory import build_embedder
from context_store.index.embed.onnx_backend import OnnxEncoder, onnx_encoder
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder
from context_store.settings import EmbeddingConfig
from tests.conftest import REFUNDS_V1, REPO

pytestmark = pytest.mark.e2e

CHUNKS = [
    "Refund policy > Refund window\n\nYou can ask for a refund within 30 days of delivery.",
    "Invoices",
    REFUNDS_V1,
    "Plausible account settings > Two-factor authentication\n\n" + "Open Settings, then Security, and scan the code. " * 60,
    "Shipping times\n\nParcels arrive in 2 to 5 working days with DHL; express parcels the next working day.",
    "Gift cards never expire.",
    "## Strikethrough\n\nWrap text in two tildes: ~~like this~~. GitHub-flavoured Markdown renders it struck through.",
    "Delete your account: Settings, Privacy, Delete account removes all your data within 30 days.",
    "Sites > Transfer ownership\n\nThe new owner accepts the invitation, then billing moves with the site.",
    "refund " * 400,  # truncated at 256 word pieces by both backends
]


def test_default_chunk_embedder_is_onnx_with_sentence_transformers_vectors(tmp_path: Path) -> None:
    embedder = build_embedder(EmbeddingConfig(), tmp_path)
    assert isinstance(embedder, OnnxEncoder) and embedder.batch_size == 8 and embedder.threads is None
    reference = SentenceTransformerEmbedder(batch_size=8).encode(CHUNKS)
    vectors = embedder.encode(CHUNKS)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    # row i is text i's vector although batches run in length order
    cosines = np.sum(reference * vectors, axis=1)
    assert np.min(cosines) > 0.9999, cosines
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    one_by_one = np.stack([embedder.encode([t])[0] for t in CHUNKS])
    assert np.min(np.sum(one_by_one * vectors, axis=1)) > 0.99999
    assert build_embedder(EmbeddingConfig(), tmp_path) is embedder  # one session per process and export


def test_pinned_threads_keep_the_count_fitted_to_the_load_when_pinned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The freshness replay pins them, so the warm path and its floor encode on one thread count."""
    embedder = build_embedder(EmbeddingConfig(), tmp_path)
    assert isinstance(embedder, OnnxEncoder) and embedder.threads is None
    cores = os.cpu_count() or 1
    if cores == 1:
        pytest.skip("one core: every fitted count is one, so pinning cannot be told apart")
    monkeypatch.setattr(os, "getloadavg", lambda: (10.0 * cores, 0.0, 0.0))  # overloaded: one thread
    assert embedder.pin_threads() == 1
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))  # quiet again: still one
    assert embedder._threads() == 1 and embedder.pin_threads() == 1
    assert embedder.encode(["Gift cards never expire."]).shape == (1, embedder.dim)


def test_backend_choice() -> None:
    assert isinstance(build_embedder(EmbeddingConfig()), SentenceTransformerEmbedder)  # no home, no export
    assert isinstance(build_embedder(EmbeddingConfig(backend="torch"), Path("/nonexistent")), SentenceTransformerEmbedder)
    with pytest.raises(ConfigError, match="needs a home"):
        build_embedder(EmbeddingConfig(backend="onnx"))
    with pytest.raises(ValueError):
        EmbeddingConfig(backend="tensorflow")


def test_unexportable_model_falls_back_under_auto_and_fails_clearly_under_onnx(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError, match="embedding.backend onnx .* is unavailable"):
        build_embedder(EmbeddingConfig(model=missing, backend="onnx"), tmp_path)
    assert isinstance(build_embedder(EmbeddingConfig(model=missing), tmp_path), SentenceTransformerEmbedder)


def test_a_run_process_embeds_without_importing_torch(tmp_path: Path) -> None:
    """What a launched Dagster run pays: the code location and the ONNX model, not torch (~10 s)."""
    build_embedder(EmbeddingConfig(), tmp_path)  # the export exists, as after a deployment's first ingest
    code = (
        "import sys\n"
        "import pipeline.definitions\n"
        "from context_store.index.embed.factory import build_embedder\n"
        "from context_store.settings import EmbeddingConfig\n"
        "v = build_embedder(EmbeddingConfig(), sys.argv[1]).encode(['Where is my parcel?'])\n"
        "assert v.shape == (1, 384), v.shape\n"
        "print(sorted(m for m in ('torch', 'sentence_transformers', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=False, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_passes_run_side_by_side_on_several_threads_with_the_vectors_of_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    one = onnx_encoder(EmbeddingConfig().model, tmp_path, threads=1, batch_size=2)
    two = onnx_encoder(EmbeddingConfig().model, tmp_path, threads=2, batch_size=2)
    ran_on: set[str] = set()
    forward = OnnxEncoder._forward
    helper_ran = threading.Event()

    def watched(session: Any, encodings: list[Any]) -> Any:
        ran_on.add(threading.current_thread().name)
        if threading.current_thread().name == "onnx-pass":
            helper_ran.set()
        elif side_by_side_call:
            helper_ran.wait(10)  # however the threads are scheduled, a helper takes a pass
        return forward(session, encodings)

    monkeypatch.setattr(OnnxEncoder, "_forward", staticmethod(watched))
    side_by_side_call = False
    alone = one.encode(CHUNKS)
    assert ran_on == {threading.current_thread().name}
    side_by_side_call = True
    side_by_side = two.encode(CHUNKS)
    assert ran_on == {threading.current_thread().name, "onnx-pass"}
    assert np.min(np.sum(alone * side_by_side, axis=1)) > 0.99999  # row i is still text i's vector
    assert two.encode(["Gift cards never expire."]).shape == (1, 384)  # one text: the intra-op session


def test_a_failing_pass_fails_its_call_and_leaves_no_thread_running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    two = onnx_encoder(EmbeddingConfig().model, tmp_path, threads=2, batch_size=2)
    forward = OnnxEncoder._forward
    caller = threading.current_thread()
    helper_busy = threading.Event()

    def fails_on_the_caller(session: Any, encodings: list[Any]) -> Any:
        if threading.current_thread() is caller:
            helper_busy.wait(10)  # fail while a helper is in the middle of a pass
            raise RuntimeError("this pass failed")
        helper_busy.set()
        return forward(session, encodings)

    monkeypatch.setattr(OnnxEncoder, "_forward", staticmethod(fails_on_the_caller))
    running_before = set(threading.enumerate())  # another test's encoder may still have helpers of its own
    with pytest.raises(RuntimeError, match="this pass failed"):
        two.encode(CHUNKS)
    assert helper_busy.is_set()
    assert not [t for t in threading.enumerate() if t.name == "onnx-pass" and t not in running_before]
    monkeypatch.undo()
    assert two.encode(CHUNKS).shape == (len(CHUNKS), 384)  # the encoder is fine afterwards
