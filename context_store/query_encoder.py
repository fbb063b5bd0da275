"""Query encoders for serving: the bundled model exported to ONNX locally, plus an LRU cache.

Encoding one short query with PyTorch costs ~15-45 ms on this 2-core machine; the same
network run by ONNX Runtime on one thread costs about half, with identical vectors (fp32;
checked against the PyTorch model at export, cosine >= 0.9999). ``onnx-int8`` (dynamic
quantisation) is faster again but moves vectors (cosine ~0.97 to fp32), so it is opt-in.

The ONNX file is produced from the installed model on first use and kept under
``<home>/models``; nothing is downloaded. When onnxruntime or the export is unavailable,
``auto`` falls back to the PyTorch model with one intra-op thread.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from context_store.coalesce import Coalescer
from context_store.embedding import Embedder, SentenceTransformerEmbedder, resolve_model_path
from context_store.errors import ConfigError
from context_store.settings import EmbeddingConfig

__all__ = ["CachedEncoder", "CoalescingEncoder", "OnnxQueryEncoder", "build_query_encoder", "export_onnx"]

log = logging.getLogger(__name__)

_PROBES = [
    "how do I get a refund for a damaged parcel",
    "Change the email address on my account",
    "strikethrough text in github markdown",
]
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length: what the PyTorch path truncates at


def export_onnx(model: str, target: Path, *, quantize: bool = False) -> Path:
    """Export ``model`` (a sentence-transformers BERT-style model) to ``target``; idempotent."""
    fp32 = target if not quantize else target.with_name(target.stem.removesuffix(".int8") + ".onnx")
    if not fp32.exists():
        import torch
        from transformers import AutoModel, AutoTokenizer

        path = resolve_model_path(model)
        tokenizer = AutoTokenizer.from_pretrained(path)
        bert = AutoModel.from_pretrained(path).eval()

        class _Hidden(torch.nn.Module):
            # BertModel.forward's positional order changed across transformers releases: name them.
            def __init__(self, inner: Any) -> None:
                super().__init__()
                self.inner = inner

            def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
                return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

        sample = tokenizer(["a sample query"], return_tensors="pt")
        fp32.parent.mkdir(parents=True, exist_ok=True)
        tmp = fp32.with_suffix(".tmp")
        names = ["input_ids", "attention_mask", "token_type_ids"]
        with warnings.catch_warnings():
            # torch 2.13 pins this exporter; its notice that a newer one exists is not actionable here.
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                _Hidden(bert), tuple(sample[n] for n in names), str(tmp), input_names=names,
                output_names=["last_hidden_state"], dynamic_axes={n: {0: "batch", 1: "tokens"} for n in [*names, "last_hidden_state"]},
                opset_version=17, dynamo=False,
            )
        os.replace(tmp, fp32)  # a killed export never leaves a half-written model behind
    if quantize and not target.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = target.with_suffix(".tmp")
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
        os.replace(tmp, target)
    return target


class OnnxQueryEncoder:
    """Mean-pooled, normalised sentence embeddings from an ONNX export, one thread per process."""

    def __init__(self, model: str, onnx_path: Path, *, threads: int = 1) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.name = model  # same name as the PyTorch embedder: vectors are interchangeable (fp32)
        self.path = onnx_path
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        self._tokenizer = Tokenizer.from_file(str(Path(resolve_model_path(model)) / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # padding is done per batch, to the longest text in it
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"]).shape[1])
        return self._dim

    def encode(self, texts: list[str]) -> np.ndarray:
        """One forward pass for all ``texts``, padded to the longest; pooling ignores the padding."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        encodings = self._tokenizer.encode_batch(list(texts))
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(texts), width), dtype=np.int64)
        mask = np.zeros((len(texts), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        hidden = self._session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        weights = mask[:, :, None].astype(np.float32)
        vecs = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return np.asarray(vecs / np.where(norms == 0, 1.0, norms), dtype=np.float32)


class CoalescingEncoder:
    """Encodes concurrent requests' single queries in one batch (``context_store.coalesce``).

    Measured with the bundled model on this 2-core machine: ~8.8 ms a query one at a time,
    ~7.5 ms a query in batches of four; a lone request is encoded at once, never held back."""

    def __init__(self, inner: Embedder, *, max_batch: int = 16) -> None:
        self.inner = inner
        self.name = inner.name
        self._batch = Coalescer(lambda texts: list(inner.encode(texts)), max_batch=max_batch)

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        if len(texts) == 1:
            return np.asarray([self._batch(texts[0])], dtype=np.float32)
        return self.inner.encode(texts)


class CachedEncoder:
    """An LRU cache of query vectors in front of any embedder (agents repeat questions)."""

    def __init__(self, inner: Embedder, size: int = 2048) -> None:
        self.inner = inner
        self.name = inner.name
        self.size = size
        self.hits = 0
        self.misses = 0
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def encode(self, texts: list[str]) -> np.ndarray:
        out: list[np.ndarray | None] = [None] * len(texts)
        missing = []
        with self._lock:
            for i, text in enumerate(texts):
                vec = self._cache.get(text)
                if vec is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end(text)
                    out[i] = vec
            self.hits += len(texts) - len(missing)
            self.misses += len(missing)
        if missing:
            encoded = self.inner.encode([texts[i] for i in missing])
            with self._lock:
                for i, vec in zip(missing, encoded):
                    out[i] = vec
                    if self.size:
                        self._cache[texts[i]] = vec
                        if len(self._cache) > self.size:
                            self._cache.popitem(last=False)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(out, dtype=np.float32)


def build_query_encoder(config: EmbeddingConfig, kind: str, home: Path, *, cache_size: int = 0) -> Embedder:
    """The encoder the API uses for questions; ``kind`` is auto | torch | onnx | onnx-int8."""
    if kind not in ("auto", "torch", "onnx", "onnx-int8"):
        raise ConfigError(f"retrieval.query_encoder {kind!r} is not one of auto, torch, onnx, onnx-int8")
    encoder: Embedder | None = None
    if kind != "torch":
        try:
            encoder = CoalescingEncoder(_onnx_encoder(config, kind, home))
        except Exception as exc:  # onnxruntime missing, a non-BERT model, an export failure
            if kind != "auto":
                raise ConfigError(f"query encoder {kind!r} for {config.model!r} is unavailable: {exc}") from exc
            log.warning("ONNX query encoder unavailable (%s); using PyTorch", exc)
    if encoder is None:
        import torch

        torch.set_num_threads(1)  # measured: two threads per query under concurrent load is several times slower
        encoder = SentenceTransformerEmbedder(config.model, batch_size=config.batch_size, device=config.device)
    return CachedEncoder(encoder, cache_size) if cache_size else encoder


def _onnx_encoder(config: EmbeddingConfig, kind: str, home: Path) -> OnnxQueryEncoder:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in config.model)
    quantize = kind == "onnx-int8"
    target = home / "models" / (f"{safe}.int8.onnx" if quantize else f"{safe}.onnx")
    lock = target.with_suffix(".lock")
    target.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    with lock.open("w") as fh:  # several uvicorn workers start at once; one exports
        fcntl.flock(fh, fcntl.LOCK_EX)
        export_onnx(config.model, target, quantize=quantize)
        encoder = OnnxQueryEncoder(config.model, target)
        if not quantize:
            _check_parity(config, encoder, target)
    return encoder


def _check_parity(config: EmbeddingConfig, encoder: OnnxQueryEncoder, target: Path) -> None:
    """fp32 ONNX must give the indexed model's vectors; checked once per export, then remembered."""
    stamp = target.with_suffix(".parity.json")
    if stamp.exists():
        return
    reference = SentenceTransformerEmbedder(config.model, device="cpu").encode(_PROBES)
    cosine = float(np.min(np.sum(reference * encoder.encode(_PROBES), axis=1)))
    if cosine < 0.9999:
        raise ConfigError(f"{target}: ONNX vectors differ from the PyTorch model (min cosine {cosine:.5f})")
    stamp.write_text(json.dumps({"min_cosine": cosine, "probes": len(_PROBES)}))
