"""The bundled model run by ONNX Runtime: exported locally, checked against PyTorch, cached per process.

Both the API's query encoder and the indexer's chunk embedder use it. Measured on this 2-core
machine: one short query costs about half of what PyTorch takes; 144 help-centre chunks take
3.3 s against 3.9 s; and a process that embeds through ONNX never imports torch or
sentence-transformers (~10 s of start-up in every Dagster run process). The fp32 vectors
match the PyTorch model's (cosine >= 0.9999 is checked once per export; 0.9999998 measured),
so vectors from either backend share the (chunk hash, model) cache. ``quantize`` (int8)
moves vectors (cosine ~0.97), so only the query encoder offers it, opt-in.

The export is made from the installed model on first use, under ``<home>/models`` or
``$FRESHCONTEXT_MODELS_DIR`` (one directory several homes can share); nothing is downloaded.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import warnings
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from context_store.errors import ConfigError
from context_store.index.embed.model_files import models_dir, resolve_model_path, threads_for_load
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder

__all__ = ["MAX_TOKENS", "OnnxEncoder", "export_onnx", "forward_batches", "onnx_encoder", "pass_cost", "spread_passes"]

MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length: what the PyTorch path truncates at
MIN_PARITY = 0.9999
_PROBES = [
    "how do I get a refund for a damaged parcel",
    "Change the email address on my account",
    "strikethrough text in github markdown",
    (
        "## Refund window\n\nYou can ask for a refund within 30 days of delivery. Open Settings, then Orders, "
        "and choose Request refund; the money is back on your card within five working days."
    ),
]


# The cost of one forward pass of n texts padded to w tokens, fitted on this 2-core machine
# (all-MiniLM-L6-v2, ONNX Runtime, 28 shapes from 1 x 8 to 8 x 256 tokens): about
# 2.0 ms + n * w * 71 us * (1 + w / 284). Only the ratios matter here: a pass costs as much as
# ~28 tokens before it starts, and attention makes a 256-token row cost 1.9 x a short one's
# per token, so padding a short text to a long one's width is dear.
_PASS_TOKENS = 28.0
_ATTENTION_WIDTH = 284.0
# Beyond this many texts a pass saves < 5 % of their cost (28 tokens against 64 rows of >= 8),
# and it bounds the search to 64 steps a text whatever batch_size says.
_MOST_PER_PASS = 64


def pass_cost(texts: int, width: int) -> float:
    """One forward pass of ``texts`` rows padded to ``width`` tokens, in tokens (the model above)."""
    return _PASS_TOKENS + texts * width * (1.0 + width / _ATTENTION_WIDTH)


def forward_batches(lengths: list[int], most: int) -> list[np.ndarray]:
    """Indices of ``lengths`` cut into forward passes of at most ``most`` texts each (and 64), cheapest in all.

    Texts are taken longest first and each pass is a run of that order (a pass is padded to
    its first text), cut where ``pass_cost`` says that padding costs more than another pass.
    Exact over those runs (dynamic programming, ``len(lengths) * most`` steps).
    """
    most = max(1, min(most, _MOST_PER_PASS))
    order = np.argsort([-n for n in lengths], kind="stable")
    widths = [lengths[i] for i in order]
    best = [0.0] + [float("inf")] * len(widths)  # best[j]: the cheapest passes over the first j texts
    start = [0] * (len(widths) + 1)  # where the last of those passes starts
    for j in range(1, len(widths) + 1):
        for i in range(max(0, j - most), j):
            cost = best[i] + pass_cost(j - i, widths[i])
            if cost < best[j]:
                best[j], start[j] = cost, i
    passes: list[np.ndarray] = []
    j = len(widths)
    while j:
        passes.append(order[start[j] : j])
        j = start[j]
    return passes[::-1]


def spread_passes(passes: list[np.ndarray], lengths: list[int], workers: int) -> list[np.ndarray]:
    """``passes`` in the order ``workers`` threads take them (each the next one as it frees): dearest first.

    The dearest pass is cut in two (its rows stay in length order, so each half is padded to
    its own longest) until a cut would lengthen the busiest worker's time under ``pass_cost``
    or the dearest pass is one text: a call of one pass keeps every worker busy, and no worker
    runs a long pass alone at the end.
    """
    def cost(rows: np.ndarray) -> float:
        return pass_cost(len(rows), max(lengths[i] for i in rows))

    def busiest(order: list[np.ndarray]) -> float:
        loads = [0.0] * max(1, workers)
        for rows in order:
            loads[loads.index(min(loads))] += cost(rows)
        return max(loads)

    spread = sorted(passes, key=cost, reverse=True)
    now = busiest(spread)
    while spread and len(spread[0]) > 1:
        head, half = spread[0], (len(spread[0]) + 1) // 2
        cut = sorted([*spread[1:], head[:half], head[half:]], key=cost, reverse=True)
        after = busiest(cut)
        if after > now:
            break
        spread, now = cut, after
    return spread


_ENCODERS: dict[tuple[str, int | None, int | None], OnnxEncoder] = {}
_LOCK = threading.Lock()


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
            # torch 2.13 pins this exporter; its notice that a newer one exists, and the tracer's
            # notes on BERT's shape checks, are not actionable here: the parity check is what counts.
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", UserWarning)
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


class OnnxEncoder:
    """Mean-pooled, normalised sentence embeddings from an ONNX export.

    ``threads``: how many cores a call uses; None fits them to the machine's load at each call
    (all cores, or one when overloaded: ``threads_for_load``), for the indexer. ``batch_size``:
    at most this many texts in one forward pass (None: no limit, for a handful of coalesced
    queries); texts of similar length share a pass (``forward_batches``), each padded to its
    longest text.

    A call of several texts on several threads runs its passes side by side, each on one
    thread of a one-thread session (``spread_passes``); one text runs on the session's
    intra-op threads. Measured on this 2-core machine (the Plausible help centre's chunks,
    three alternating rounds, 2026-12-05): calls of 3, 8 and 16 chunks took 0.83, 0.82 and
    0.81 x the time of one pass after another on two intra-op threads, and a 600-chunk call
    0.88 x; a single chunk took 1.46 x on one thread, so it keeps both. The vectors are the
    same (cosine >= 0.9999998). The one-thread session is a second copy of the model: a
    process's RSS went from 311 to 403 MiB. Concurrent passes on the intra-op session alone
    would save that and took 0.86-0.89 x instead of 0.81-0.83 x.
    """

    def __init__(self, model: str, onnx_path: Path, *, threads: int | None = 1, batch_size: int | None = None) -> None:
        from tokenizers import Tokenizer

        self.name = model  # same name as the PyTorch embedder: the vectors are interchangeable (fp32)
        self.path = onnx_path
        self.threads = threads
        self.batch_size = batch_size
        self._sessions: dict[int, Any] = {}
        self._lock = threading.Lock()
        self._tokenizer = Tokenizer.from_file(str(Path(resolve_model_path(model)) / "tokenizer.json"))
        self._tokenizer.enable_truncation(MAX_TOKENS)
        self._tokenizer.no_padding()  # padding is done per batch, to the longest text in it
        self._session(self._threads())  # a missing or corrupt file fails here, not at the first edit
        self._dim: int | None = None

    def _threads(self) -> int:
        return self.threads or threads_for_load(os.cpu_count() or 1)

    def pin_threads(self) -> int:
        """Keep the thread count fitted to the load now for every later call (a fitted encoder's
        calls seconds apart may otherwise run on different counts); returns it."""
        self.threads = self._threads()
        return self.threads

    def _session(self, threads: int) -> Any:
        with self._lock:
            if threads not in self._sessions:
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = threads
                options.inter_op_num_threads = 1
                if threads > 1:
                    # Idle pool threads sleep instead of spinning. Measured on the 143 new chunks of
                    # one 58-file commit: 5.7 s against 6.2 s alone, 11.0 against 11.7 s beside a busy
                    # process: spinning threads take the core the other work needs.
                    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                self._sessions[threads] = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
            return self._sessions[threads]

    @property
    def dim(self) -> int:
        if self._dim is None:
            self._dim = int(self.encode(["dimension probe"]).shape[1])
        return self._dim

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        threads = self._threads()
        encodings = self._tokenizer.encode_batch(list(texts))
        lengths = [len(e.ids) for e in encodings]
        passes = forward_batches(lengths, self.batch_size or len(encodings))
        if threads > 1 and len(texts) > 1:
            done = self._side_by_side(spread_passes(passes, lengths, threads), encodings, threads)
        else:
            session = self._session(threads)
            done = [(rows, self._forward(session, [encodings[i] for i in rows])) for rows in passes]
        out = np.empty((len(texts), done[0][1].shape[1]), dtype=np.float32)
        for rows, vecs in done:
            out[rows] = vecs
        return out

    def _side_by_side(self, passes: list[np.ndarray], encodings: list[Any], threads: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Run ``passes`` on ``threads`` threads (the caller's and short-lived helpers), each taking the
        next pass as it frees, on one single-threaded session: ONNX Runtime runs concurrent calls
        of one session on their callers' threads. Threads of their own per call, not a pool, so a
        forked process never inherits a pool whose threads it lacks."""
        session = self._session(1)
        todo = deque(passes)
        done: list[tuple[np.ndarray, np.ndarray]] = []
        failed: list[BaseException] = []

        def work() -> None:
            try:
                while not failed:
                    try:
                        rows = todo.popleft()
                    except IndexError:
                        return
                    done.append((rows, self._forward(session, [encodings[i] for i in rows])))
            except BaseException as exc:  # noqa: BLE001 -- re-raised in the caller once every helper has stopped
                failed.append(exc)

        helpers = [threading.Thread(target=work, name="onnx-pass", daemon=True) for _ in range(min(threads, len(passes)) - 1)]
        for helper in helpers:
            helper.start()
        work()
        for helper in helpers:
            helper.join()
        if failed:
            raise failed[0]
        return done

    @staticmethod
    def _forward(session: Any, encodings: list[Any]) -> np.ndarray:
        """One forward pass, padded to the longest; pooling ignores the padding."""
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for i, e in enumerate(encodings):
            ids[i, : len(e.ids)] = e.ids
            mask[i, : len(e.ids)] = 1
        hidden = session.run(None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)})[0]
        weights = mask[:, :, None].astype(np.float32)
        vecs = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        return np.asarray(vecs / np.where(norms == 0, 1.0, norms), dtype=np.float32)


def onnx_encoder(
    model: str, home: Path, *, quantize: bool = False, threads: int | None = 1, batch_size: int | None = None
) -> OnnxEncoder:
    """The ONNX encoder for ``model``, exported (once, under a file lock) if it is not there yet."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    directory = models_dir(home)
    target = directory / (f"{safe}.int8.onnx" if quantize else f"{safe}.onnx")
    directory.mkdir(parents=True, exist_ok=True)
    key = (str(target), threads, batch_size)
    with _LOCK:
        if key in _ENCODERS:
            return _ENCODERS[key]
        with target.with_suffix(".lock").open("w") as fh:  # API workers and run processes start at once; one exports
            fcntl.flock(fh, fcntl.LOCK_EX)
            export_onnx(model, target, quantize=quantize)
            encoder = OnnxEncoder(model, target, threads=threads, batch_size=batch_size)
            if not quantize:
                _check_parity(model, encoder, target)
        _ENCODERS[key] = encoder
        return encoder


def _check_parity(model: str, encoder: OnnxEncoder, target: Path) -> None:
    """fp32 ONNX must give the PyTorch model's vectors; checked once per export, then remembered."""
    stamp = target.with_suffix(".parity.json")
    if stamp.exists():
        return
    reference = SentenceTransformerEmbedder(model, device="cpu").encode(_PROBES)
    cosine = float(np.min(np.sum(reference * encoder.encode(_PROBES), axis=1)))
    if cosine < MIN_PARITY:
        raise ConfigError(f"{target}: ONNX vectors differ from the PyTorch model (min cosine {cosine:.5f})")
    stamp.write_text(json.dumps({"min_cosine": cosine, "probes": len(_PROBES)}))
