"""Fit the learned fusion (``context_store/retrieve/fusion_weights.json``) on every open set,
after validating the recipe leave-one-set-out.

Protocol (printed and stored in the weights file's provenance):
1. Every open set (``bench/open_sets.py``) is ingested through the real pipeline; for each
   judged query the retriever's own ``hybrid`` candidates (dense and full-text top 100, the
   text ranker weighing the title and heading trail by ``--heading-weight``) and each
   candidate's document are taken, so training sees exactly what serving fuses.
2. Leave-one-set-out: for each set, the model is fitted on the other sets only and scored
   on it (nDCG@10 by document). Every set counts equally in the loss (a listwise softmax over
   each query's candidates, relevant documents' chunks as positives, L2 ``--l2``).
3. The weights shipped are fitted on all sets with the same recipe.
4. The gate: the new weights are written only if, on every set, the fitted model's nDCG@10 is
   at least the current file's (``--force`` to override), so a fusion change goes live only
   when it is at least as good everywhere.

    python bench/train_fusion.py [--work DIR] [--features cos_gap,text_ratio] [--write]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.open_sets import SET_NAMES, open_sets  # noqa: E402
from context_store.retrieve.evidence import FEATURES, candidate_features  # noqa: E402
from context_store.retrieve.fusion_model import DEFAULT_WEIGHTS, FusionModel, load_fusion_model  # noqa: E402


def collect(work: Path, heading_weight: float, names: tuple[str, ...]) -> dict[str, list[dict]]:
    """Per set, per judged query: candidate cosines, text scores, document ids and labels (cached)."""
    from context_store.measure.beir import beir_id_for, load_beir
    from pipeline.cli.eval_retrieval import beir_home, retriever_for

    out: dict[str, list[dict]] = {}
    for name, folder in open_sets(work, names).items():
        cache = work / "fusion_cache" / f"{name}-h{heading_weight:g}.json"
        if cache.exists():
            out[name] = json.loads(cache.read_text())
            continue
        dataset = load_beir(folder)
        with beir_home(dataset, work / f"home-{name}") as home:
            retriever = retriever_for(home, work / "model_home")
            retriever.fusion = FusionModel.from_json({**retriever.fusion.as_json(), "heading_weight": heading_weight})
            rows = []
            for qid, text in dataset.judged_queries().items():
                cands, docs = retriever.fusion_inputs(text[:2000], depth=100)
                beir = [beir_id_for(d) for d in docs]
                rel = dataset.qrels.get(qid, {})
                rows.append({"cos": [c.vector_score for c in cands], "text": [c.text_score or 0.0 for c in cands], "doc": beir,
                             "label": [rel.get(d, 0) for d in beir], "nrel": sorted((r for d, r in rel.items() if r > 0 and d in dataset.corpus), reverse=True)})
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(rows))
        out[name] = rows
    return out


def ndcg10(scores: np.ndarray, row: dict) -> float:
    """nDCG@10 with chunks collapsed to their documents by the best chunk, as BEIR scores documents."""
    seen: set[str] = set()
    gains: list[float] = []
    for i in np.argsort(-scores, kind="stable"):
        if row["doc"][i] not in seen:
            seen.add(row["doc"][i])
            gains.append(row["label"][i])
            if len(gains) == 10:
                break
    dcg = sum((2 ** g - 1) / np.log2(r + 2) for r, g in enumerate(gains))
    ideal = sum((2 ** g - 1) / np.log2(r + 2) for r, g in enumerate(row["nrel"][:10]))
    return float(dcg / ideal) if ideal else 0.0


def matrices(rows: list[dict]) -> list[np.ndarray]:
    out = []
    for row in rows:
        _, doc = np.unique(np.asarray(row["doc"], dtype=str), return_inverse=True)
        out.append(candidate_features(np.asarray(row["cos"]), np.asarray(row["text"]), doc))
    return out


def mode_scores(row: dict, mode: str) -> np.ndarray:
    cos, text = np.asarray(row["cos"]), np.asarray(row["text"])
    if mode == "vector":
        return cos
    if mode == "text":
        return text + 1e-9 * cos
    rank_v = np.argsort(np.argsort(-cos, kind="stable"), kind="stable") + 1
    rank_t = np.argsort(np.argsort(-text, kind="stable"), kind="stable") + 1
    return 1 / (60 + rank_v) + np.where(text > 0, 1 / (60 + rank_t), 0.0)


def fit(data: dict[str, list[dict]], mats: dict[str, list[np.ndarray]], names: list[str], features: list[str], l2: float) -> FusionModel:
    from scipy.optimize import minimize

    cols = [FEATURES.index(f) for f in features]
    stacked = np.vstack([m[:, cols] for n in names for m in mats[n]])
    mean, scale = stacked.mean(0), stacked.std(0) + 1e-9
    groups = [((m[:, cols] - mean) / scale, np.asarray(r["label"]) > 0, 1.0 / len(data[n]))
              for n in names for m, r in zip(mats[n], data[n]) if any(r["label"])]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = l2 * float(w @ w), 2 * l2 * w
        for x, pos, weight in groups:
            s = x @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            p_pos = p[pos].sum() + 1e-12
            total -= weight * np.log(p_pos)
            grad -= weight * ((p[pos] @ x[pos]) / p_pos - p @ x)
        return total, grad

    w = minimize(loss, np.zeros(len(cols)), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    return FusionModel(tuple(features), mean, scale, w)


def evaluate(model: FusionModel, rows: list[dict], mats: list[np.ndarray]) -> float:
    return float(np.mean([ndcg10(model.score(m), r) for m, r in zip(mats, rows)]))


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/freshcontext-fusion"), help="sets, homes and candidate caches")
    parser.add_argument("--features", default="cos_gap,text_ratio")
    parser.add_argument("--heading-weight", type=float, default=0.25)
    parser.add_argument("--l2", type=float, default=0.01)
    parser.add_argument("--sets", default=",".join(SET_NAMES))
    parser.add_argument("--write", action="store_true", help="write the weights file if the gate passes")
    parser.add_argument("--force", action="store_true", help="write even if some set got worse than the current weights")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args()
    names = args.sets.split(",")
    features = args.features.split(",")
    data = collect(args.work, args.heading_weight, tuple(names))
    mats = {n: matrices(rows) for n, rows in data.items()}
    report: dict[str, dict[str, float]] = {}
    for held in names:
        model = fit(data, mats, [n for n in names if n != held], features, args.l2)
        row = {m: float(np.mean([ndcg10(mode_scores(r, m), r) for r in data[held]])) for m in ("vector", "text", "rrf")}
        row["learned_loso"] = evaluate(model, data[held], mats[held])
        report[held] = row
    final = fit(data, mats, names, features, args.l2)
    current = load_fusion_model(args.out) if args.out.exists() else None
    for n in names:
        report[n]["learned_all_sets"] = evaluate(final, data[n], mats[n])
        if current is not None and current.heading_weight == args.heading_weight and set(current.features) <= set(FEATURES):
            report[n]["current_file"] = evaluate(current, data[n], mats[n])
    for n, row in report.items():
        print(f"{n:20s} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))
    print("weights:", dict(zip(final.features, np.round(final.weights / final.scale, 4))))
    worse = [n for n, row in report.items() if "current_file" in row and row["learned_all_sets"] < row["current_file"] - 1e-9]
    if not args.write:
        return
    if worse and not args.force:
        sys.exit(f"gate: not written; worse than the current weights on {', '.join(worse)} (--force to override)")
    provenance = {
        "sets": names, "date": dt.date.today().isoformat(), "commit": commit(), "features": features,
        "heading_weight": args.heading_weight, "l2": args.l2, "candidates": "dense and full-text top 100 per query",
        "protocol": "leave-one-set-out: fit on all sets but one, nDCG@10 on the one left out; shipped weights fit on all sets",
        "ndcg@10": {n: {k: round(v, 4) for k, v in row.items()} for n, row in report.items()},
    }
    model = FusionModel(final.features, final.mean, final.scale, final.weights, args.heading_weight, provenance)
    print("wrote", model.save(args.out))


if __name__ == "__main__":
    main()
