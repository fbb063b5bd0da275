"""``embedding.device``: auto | cpu | cuda. CPU and GPU vectors agree, so an index built on one serves on the other.

The CPU half runs everywhere: the ONNX export against the PyTorch model on the CPU (the very
code the CUDA path runs, modulo the device), and the GPU search's arithmetic on CPU tensors.
The CUDA half skips without a GPU; bench/gpu_check.sh runs it on a lent one.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from context_store.errors import ConfigError
from context_store.index.embed import device as device_module
from context_store.index.embed.device import cuda_available, resolve_device
from context_store.index.embed.factory import GPU_MIN_BATCH, build_embedder
from context_store.index.embed.onnx_backend import OnnxEncoder
from context_store.index.embed.query_encoder import build_query_encoder
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder
from context_store.retrieve import dense_index
from context_store.retrieve.dense_index import DenseIndex, _top, torch_top
from context_store.settings import EMBEDDING_DEVICE_ENV, EmbeddingConfig, Settings
from context_store.store.vector_index import VectorIndex, company_schema
from tests.conftest import REPO
from tests.context_store.index.test_onnx_encoder import CHUNKS

QUESTIONS = ["how do I get a refund for a damaged parcel", "Change the email address on my account", "can I pay by invoice?",
             "Where is my parcel?", "strikethrough text in github markdown", "delete my account and all my data"]
MIN_COSINE = 0.9999
needs_cuda = pytest.mark.skipif(not cuda_available(), reason="no CUDA GPU visible to torch (bench/gpu_check.sh runs these on a lent one)")


def test_device_setting_is_validated_and_the_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert EmbeddingConfig().device == "auto"
    for value in ("auto", "cpu", "cuda", "cuda:1", " CUDA "):
        EmbeddingConfig(device=value)
    for value in ("gpu", "mps", "cuda:", "cuda:x"):
        with pytest.raises(ValueError, match="not one of auto, cpu, cuda"):
            EmbeddingConfig(device=value)
    (tmp_path / "freshcontext.yaml").write_text("embedding:\n  device: cpu\n  batch_size: 16\n")
    assert Settings.load(tmp_path).embedding.device == "cpu"
    monkeypatch.setenv(EMBEDDING_DEVICE_ENV, "cuda")
    loaded = Settings.load(tmp_path).embedding
    assert (loaded.device, loaded.batch_size) == ("cuda", 16)
    monkeypatch.setenv(EMBEDDING_DEVICE_ENV, "tpu")
    with pytest.raises(ConfigError, match="not one of auto, cpu, cuda"):
        Settings.load(tmp_path)


def test_detection_costs_no_torch_import_on_a_cpu_host() -> None:
    """``cpu`` decides nothing; ``auto`` imports torch only where a GPU is plausible (not here, or it is skipped)."""
    code = (
        "import sys\n"
        "from context_store.index.embed.device import cuda_plausible, resolve_device\n"
        "assert resolve_device('cpu') == 'cpu'\n"
        "assert 'torch' not in sys.modules\n"
        "print(cuda_plausible(), resolve_device('auto'), 'torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True, text=True, timeout=120)
    plausible, resolved, imported = out.stdout.split()
    if plausible == "True":
        pytest.skip("a GPU is plausible on this host: auto rightly asks torch")
    assert (resolved, imported) == ("cpu", "False")


def test_cuda_is_implausible_when_hidden_or_torch_is_a_cpu_build(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert not device_module.cuda_plausible()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    version = tmp_path / "version.py"
    version.write_text("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\nhip: Optional[str] = None\n")
    assert not device_module._gpu_build_in(tmp_path)
    version.write_text("__version__ = '2.11.0+cu130'\ncuda: Optional[str] = '13.0'\nhip: Optional[str] = None\n")
    assert device_module._gpu_build_in(tmp_path)


def test_onnx_backend_on_cuda_is_refused_with_what_to_change(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="runs on the CPU.*set device cpu or auto"):
        build_embedder(EmbeddingConfig(backend="onnx", device="cuda"), tmp_path)


@pytest.mark.skipif(cuda_available(), reason="a GPU is visible: cuda is a valid choice here")
def test_cuda_without_a_gpu_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sees no CUDA GPU here: set it to auto or cpu"):
        build_embedder(EmbeddingConfig(device="cuda"), tmp_path)
    with pytest.raises(ConfigError, match="sees no CUDA GPU"):
        build_query_encoder(EmbeddingConfig(device="cuda:1"), "auto", tmp_path)


@pytest.mark.e2e
def test_cpu_half_onnx_and_the_torch_model_the_gpu_runs_agree(tmp_path: Path) -> None:
    """What the CUDA path runs (sentence-transformers, fp32, batches of 128) against the CPU's ONNX export (batches of 8)."""
    onnx = build_embedder(EmbeddingConfig(device="cpu"), tmp_path)
    torch_model = build_embedder(EmbeddingConfig(device="cpu", backend="torch"), tmp_path)
    assert isinstance(onnx, OnnxEncoder) and isinstance(torch_model, SentenceTransformerEmbedder)
    texts = CHUNKS + QUESTIONS
    reference = SentenceTransformerEmbedder(batch_size=GPU_MIN_BATCH, device="cpu").encode(texts)
    for vectors in (onnx.encode(texts), torch_model.encode(texts)):
        assert np.min(np.sum(reference * vectors, axis=1)) >= MIN_COSINE
    served = build_query_encoder(EmbeddingConfig(device="cpu"), "auto", tmp_path).encode(QUESTIONS)
    assert np.min(np.sum(reference[len(CHUNKS):] * served, axis=1)) >= MIN_COSINE


def _index(tmp_path: Path, vectors: np.ndarray) -> VectorIndex:
    import pyarrow as pa

    rows = [{"chunk_id": f"c{i}", "doc_id": f"s/d{i}", "version_id": f"v{i}", "chunk_hash": str(i), "ordinal": 0, "kind": "article",
             "title": "t", "heading": "", "text": "x", "source_path": "p", "source_changed_at": None, "indexed_at": None, "vector": v}
            for i, v in enumerate(vectors)]
    index = VectorIndex(str(tmp_path / "lance"))
    index.db.create_table("company_chunks", data=pa.Table.from_pylist(rows, schema=company_schema(vectors.shape[1])))
    return index


def _assert_same_ranking(index: VectorIndex, gpu: DenseIndex, queries: np.ndarray) -> None:
    exact = DenseIndex(index, ann="exact")
    with ThreadPoolExecutor(8) as pool:  # concurrent searches share one product and top-k
        found = list(pool.map(lambda q: gpu.search(q, 10), queries))
    for q, (snap, rows, scores) in zip(queries, found):
        _, want_rows, want_scores = exact.search(q, 10)
        assert snap.gpu is not None and snap.projection is None
        assert rows.tolist() == want_rows.tolist()
        assert np.allclose(scores, want_scores, atol=1e-5)


def test_torch_search_ranks_as_numpy_on_cpu_tensors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU search's code path end to end, on CPU tensors (``is_cuda`` patched)."""
    import torch

    rng = np.random.default_rng(9)
    vectors = rng.normal(size=(3000, 24)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:40] + rng.normal(scale=0.1, size=(40, 24)).astype(np.float32)
    tops = torch_top(torch.from_numpy(vectors), queries, 7)
    for q, (rows, scores) in zip(queries, tops):
        want_rows, want_scores = _top(np.arange(3000), vectors @ q, 7)
        assert rows.tolist() == want_rows.tolist() and np.allclose(scores, want_scores, atol=1e-5)
    monkeypatch.setattr(dense_index, "is_cuda", lambda device: True)
    index = _index(tmp_path, vectors)
    _assert_same_ranking(index, DenseIndex(index, ann="projected", device="cpu"), queries)


@pytest.mark.e2e
@needs_cuda
def test_cuda_half_gpu_vectors_match_the_cpu_torch_model(tmp_path: Path) -> None:
    gpu = build_embedder(EmbeddingConfig(), tmp_path)  # auto: a GPU is there
    assert isinstance(gpu, SentenceTransformerEmbedder) and gpu.device == resolve_device("auto") == "cuda"
    assert gpu.batch_size >= GPU_MIN_BATCH
    texts = CHUNKS + QUESTIONS
    cosines = np.sum(SentenceTransformerEmbedder(device="cpu").encode(texts) * gpu.encode(texts), axis=1)
    assert np.min(cosines) >= MIN_COSINE, cosines


@pytest.mark.e2e
@needs_cuda
def test_cuda_half_gpu_vectors_match_the_cpu_onnx_export(tmp_path: Path) -> None:
    onnx = build_embedder(EmbeddingConfig(device="cpu"), tmp_path)
    texts = CHUNKS + QUESTIONS
    cosines = np.sum(onnx.encode(texts) * build_embedder(EmbeddingConfig(device="cuda"), tmp_path).encode(texts), axis=1)
    assert np.min(cosines) >= MIN_COSINE, cosines
    served = build_query_encoder(EmbeddingConfig(device="cuda"), "auto", tmp_path).encode(QUESTIONS)
    assert np.min(np.sum(onnx.encode(QUESTIONS) * served, axis=1)) >= MIN_COSINE


@needs_cuda
def test_cuda_half_gpu_search_ranks_as_numpy(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    vectors = rng.normal(size=(20_000, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = _index(tmp_path, vectors)
    _assert_same_ranking(index, DenseIndex(index, device="cuda", ann_min_rows=1000), vectors[:64] + 0.05)
