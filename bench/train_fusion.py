"""Fit the learned fusion (``context_store/retrieve/fusion_weights.json``) on every open set,
after validating the recipe leave-one-set-out.

Protocol (printed and stored in the weights file's provenance):
1. Every open set (``bench/open_sets.py``) is ingested through the real pipeline; for each
   judged query the retriever's own ``hybrid`` candidates (dense and full-text top 100, the
   text ranker weighing the title and heading trail by ``--heading-weight``) and each
   candidate's document are taken, so training sees exactly what serving fuses.
2. The recipe: a listwise fit (every set counts equally; a softmax over each query's
   candidates, relevant documents' chunks as positives, L2 ``--l2``) of ``--features``, the
   ``--gated`` ones multiplied by the query's coverage gate (``fusion_model``). The gate's
   centre is chosen from ``GATE_CENTERS`` on the training sets by the goal, not the loss (the
   loss prefers no gate on every split while the gate is what keeps StackFAQ at dense's level):
   the highest centre whose fit is at least the best of vector, text and RRF on every training
   set, else the one with the best worst-set margin (``choose_gate``).
3. Leave-one-set-out: for each set, the recipe (centre and weights) runs on the other sets
   only and is scored on it (nDCG@10 by document): ``learned_loso`` and ``loso_gate_center``.
4. The weights shipped are the recipe run on all sets (``learned_all_sets``).
5. The gate: the new weights are written only if, on every set, they are at least the current
   file's nDCG@10 and at least the best of vector, text and RRF (``--force`` overrides and is
   recorded in the provenance as ``forced_over``), so a fusion change goes live only when it
   is at least as good everywhere.

    python bench/train_fusion.py [--work DIR] [--features cos_gap,text_ratio] [--gated text_ratio] [--write [--force]]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.open_sets import SET_NAMES, open_sets  # noqa: E402
from context_store.retrieve.evidence import candidate_features  # noqa: E402
from context_store.retrieve.fusion_model import DEFAULT_WEIGHTS, FusionModel, load_fusion_model, text_coverage  # noqa: E402

GATE_CENTERS = tuple(round(0.05 * i, 2) for i in range(11))  # coverage 0 (no gate) to 0.5
PROTOCOL = (
    "leave-one-set-out: for each set, the gate centre is chosen and the weights fitted on the other sets only, "
    "then nDCG@10 on the one left out; shipped: the same on all sets"
)


@dataclass
class SetData:
    rows: list[dict]  # per judged query: cos, text, doc, label, nrel, mass
    mats: list[np.ndarray]  # candidate_features per query
    cov: np.ndarray  # text coverage per query
    modes: dict[str, float]  # nDCG@10 of vector, text and rrf

    @property
    def best_other(self) -> float:
        return max(self.modes.values())


def collect(work: Path, heading_weight: float, names: tuple[str, ...]) -> dict[str, list[dict]]:
    """Per set, per judged query: candidate cosines, text scores, document ids and labels (cached)."""
    from context_store.measure.beir import beir_id_for, load_beir
    from pipeline.cli.eval_retrieval import beir_home, retriever_for

    out: dict[str, list[dict]] = {}
    for name, folder in open_sets(work, names).items():
        cache = work / "fusion_cache" / f"{name}-h{heading_weight:g}-v2.json"
        if cache.exists():
            out[name] = json.loads(cache.read_text())
            continue
        dataset = load_beir(folder)
        with beir_home(dataset, work / f"home-{name}") as home:
            retriever = retriever_for(home, work / "model_home")
            retriever.fusion = FusionModel.from_json({**retriever.fusion.as_json(), "heading_weight": heading_weight})
            rows = []
            for qid, text in dataset.judged_queries().items():
                cands, docs, mass = retriever.fusion_inputs(text[:2000], depth=100)
                beir = [beir_id_for(d) for d in docs]
                rel = dataset.qrels.get(qid, {})
                rows.append({"cos": [c.vector_score for c in cands], "text": [c.text_score or 0.0 for c in cands], "doc": beir, "mass": mass,
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


def coverages(rows: list[dict]) -> np.ndarray:
    """Per query, the best BM25 over the most it could score (``fusion_model.text_coverage``)."""
    return np.array([text_coverage(np.asarray(r["text"]), r.get("mass"), 1.0) for r in rows])


def mode_scores(row: dict, mode: str) -> np.ndarray:
    cos, text = np.asarray(row["cos"]), np.asarray(row["text"])
    if mode == "vector":
        return cos
    if mode == "text":
        return text + 1e-9 * cos
    rank_v = np.argsort(np.argsort(-cos, kind="stable"), kind="stable") + 1
    rank_t = np.argsort(np.argsort(-text, kind="stable"), kind="stable") + 1
    return 1 / (60 + rank_v) + np.where(text > 0, 1 / (60 + rank_t), 0.0)


@dataclass
class Recipe:
    features: list[str]
    gated: list[str]
    l2: float
    width: float = 0.05  # of the coverage gate


def fit(sets: dict[str, SetData], names: list[str], recipe: Recipe, center: float) -> FusionModel:
    """The listwise fit (every set weighs equally) of ``recipe`` with the gate at ``center``."""
    from scipy.optimize import minimize

    shape = FusionModel(tuple(recipe.features), np.zeros(len(recipe.features)), np.ones(len(recipe.features)),
                        np.zeros(len(recipe.features)), gated=tuple(recipe.gated), gate_center=center, gate_width=recipe.width)
    cols = {n: [shape.columns(m, c) for m, c in zip(sets[n].mats, sets[n].cov)] for n in names}
    stacked = np.vstack([m for n in names for m in cols[n]])
    mean, scale = stacked.mean(0), stacked.std(0) + 1e-9
    groups = [((m - mean) / scale, np.asarray(r["label"]) > 0, 1.0 / len(sets[n].rows))
              for n in names for m, r in zip(cols[n], sets[n].rows) if any(r["label"])]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        total, grad = recipe.l2 * float(w @ w), 2 * recipe.l2 * w
        for x, pos, weight in groups:
            s = x @ w
            p = np.exp(s - s.max())
            p /= p.sum()
            p_pos = p[pos].sum() + 1e-12
            total -= weight * np.log(p_pos)
            grad -= weight * ((p[pos] @ x[pos]) / p_pos - p @ x)
        return total, grad

    w = minimize(loss, np.zeros(len(recipe.features)), jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    return replace(shape, mean=mean, scale=scale, weights=w)


def evaluate(model: FusionModel, data: SetData) -> float:
    return float(np.mean([ndcg10(model.score(m, c), r) for m, c, r in zip(data.mats, data.cov, data.rows)]))


def choose_gate(sets: dict[str, SetData], names: list[str], recipe: Recipe) -> tuple[float, FusionModel]:
    """The gate centre for ``recipe`` from the training sets ``names`` alone, and the model fitted with it.

    The listwise loss does not see what the gate is for (on every split it prefers no gate), so
    the centre is chosen by the goal itself: the most cautious gate (the highest centre: text
    counts only where it covers most of the query) whose fusion is at least the best of vector,
    text and RRF on every training set; when none is, the one with the best worst-set margin."""
    if not recipe.gated:
        return 0.0, fit(sets, names, recipe, 0.0)
    tried = []
    for center in GATE_CENTERS:
        model = fit(sets, names, recipe, center)
        margins = [evaluate(model, sets[n]) - sets[n].best_other for n in names]
        tried.append((center, model, min(margins), float(np.mean(margins))))
    safe = [t for t in tried if t[2] >= 0]
    center, model, _, _ = max(safe, key=lambda t: t[0]) if safe else max(tried, key=lambda t: (t[2], t[3]))
    return center, model


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def load_sets(work: Path, heading_weight: float, names: list[str]) -> dict[str, SetData]:
    sets = {}
    for name, rows in collect(work, heading_weight, tuple(names)).items():
        modes = {m: float(np.mean([ndcg10(mode_scores(r, m), r) for r in rows])) for m in ("vector", "text", "rrf")}
        sets[name] = SetData(rows, matrices(rows), coverages(rows), modes)
    return sets


def leave_one_set_out(sets: dict[str, SetData], names: list[str], recipe: Recipe) -> dict[str, dict[str, float]]:
    """Per held-out set: every mode, and the recipe (gate chosen and weights fitted on the other sets) scored on it."""
    report: dict[str, dict[str, float]] = {}
    for held in names:
        center, model = choose_gate(sets, [n for n in names if n != held], recipe)
        report[held] = {**sets[held].modes, "learned_loso": evaluate(model, sets[held]), "loso_gate_center": center}
    return report


def gate_failures(report: dict[str, dict[str, float]]) -> list[str]:
    """Why the new weights must not go live: a set where they fall below the current file, or below
    the best of vector, text and RRF (the default must be worth having on every set)."""
    out = []
    for n, row in report.items():
        if "current_file" in row and row["learned_all_sets"] < row["current_file"] - 1e-9:
            out.append(f"{n}: {row['learned_all_sets']:.4f} < current weights {row['current_file']:.4f}")
        best = max(row[m] for m in ("vector", "text", "rrf"))
        if row["learned_all_sets"] < best - 1e-9:
            out.append(f"{n}: {row['learned_all_sets']:.4f} < best other mode {best:.4f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, default=Path("/tmp/freshcontext-fusion"), help="sets, homes and candidate caches")
    parser.add_argument("--features", default="cos_gap,text_ratio")
    parser.add_argument("--gated", default="text_ratio", help="features the coverage gate multiplies ('' for no gate)")
    parser.add_argument("--gate-width", type=float, default=0.05)
    parser.add_argument("--heading-weight", type=float, default=0.25)
    parser.add_argument("--l2", type=float, default=0.01)
    parser.add_argument("--sets", default=",".join(SET_NAMES))
    parser.add_argument("--write", action="store_true", help="write the weights file if the gate passes")
    parser.add_argument("--force", action="store_true", help="write even if the gate fails (recorded in the provenance)")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS)
    args = parser.parse_args()
    names = args.sets.split(",")
    recipe = Recipe(args.features.split(","), [f for f in args.gated.split(",") if f], args.l2, args.gate_width)
    sets = load_sets(args.work, args.heading_weight, names)
    report = leave_one_set_out(sets, names, recipe)
    center, final = choose_gate(sets, names, recipe)
    current = load_fusion_model(args.out) if args.out.exists() else None
    for n in names:
        report[n]["learned_all_sets"] = evaluate(final, sets[n])
        if current is not None and current.heading_weight == args.heading_weight:
            report[n]["current_file"] = evaluate(current, sets[n])
    for n, row in report.items():
        print(f"{n:20s} " + "  ".join(f"{k} {v:.4f}" for k, v in row.items()))
    print(f"gate centre {center:g}; weights:", dict(zip(final.features, np.round(final.weights / final.scale, 4))))
    failures = gate_failures(report)
    print("gate:", "passes on every set" if not failures else "; ".join(failures))
    if not args.write:
        return
    if failures and not args.force:
        sys.exit(f"gate: not written ({'; '.join(failures)}); --force to override")
    prior = float(np.median(np.concatenate([sets[n].cov[sets[n].cov > 0] for n in names])))
    provenance = {
        "sets": names, "date": dt.date.today().isoformat(), "commit": commit(), "features": recipe.features,
        "gated": recipe.gated, "gate_center": center, "gate_width": recipe.width, "heading_weight": args.heading_weight, "l2": args.l2,
        "candidates": "dense and full-text top 100 per query", "protocol": PROTOCOL,
        "ndcg@10": {n: {k: round(v, 4) for k, v in row.items()} for n, row in report.items()},
        **({"forced_over": failures} if failures else {}),
    }
    model = replace(final, heading_weight=args.heading_weight, coverage_prior=round(prior, 4), provenance=provenance)
    print("wrote", model.save(args.out))


if __name__ == "__main__":
    main()
