"""Retrieval quality on a labelled set: every mode side by side, plus confidence calibration.

The store must already hold the data set's corpus, ingested by the real pipeline with
``beir.write_corpus`` (so ``doc_id``s map back to BEIR ids). Chunks are ranked, then
collapsed to documents by their best chunk, as BEIR scores documents.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from context_store.measure.beir import BeirDataset, beir_id_for
from context_store.measure.ir_metrics import evaluate_run, expected_calibration_error
from context_store.retrieve.retriever import MODES, Retriever
from context_store.route.confidence import Calibrator, default_confidence, fit_calibrator

__all__ = ["QueryRun", "crossfit_ece", "evaluate_retrieval", "run_queries"]


@dataclass
class QueryRun:
    ranked: dict[str, list[str]]  # query id -> BEIR doc ids, best first
    features: dict[str, dict[str, float]]
    seconds: float


def run_queries(retriever: Retriever, dataset: BeirDataset, mode: str, *, depth: int = 100, progress: Callable[[int], None] | None = None) -> QueryRun:
    started = time.perf_counter()
    ranked: dict[str, list[str]] = {}
    features: dict[str, dict[str, float]] = {}
    for qid, text in dataset.judged_queries().items():
        if not text.strip():
            continue
        hits, feats = retriever.rank_with_features(text[:2000], mode=mode, depth=depth * 3)
        docs: list[str] = []
        for hit in hits:
            beir_id = beir_id_for(hit.doc_id)
            if beir_id not in docs:
                docs.append(beir_id)
        ranked[qid] = docs[:depth]
        features[qid] = feats
        if progress:
            progress(1)
    return QueryRun(ranked, features, time.perf_counter() - started)


def _hit_at(run: QueryRun, dataset: BeirDataset, k: int) -> dict[str, bool]:
    return {q: any(dataset.qrels.get(q, {}).get(d, 0) > 0 for d in docs[:k]) for q, docs in run.ranked.items()}


def crossfit_ece(features: dict[str, dict[str, float]], outcomes: dict[str, bool], *, folds: int = 2, **info: Any) -> float | None:
    """ECE of a calibrator fitted on the other folds (never on the queries it scores)."""
    qids = sorted(outcomes)
    if len(qids) < 10 * folds:
        return None
    confidences, ys = [], []
    for f in range(folds):
        test = qids[f::folds]
        train = [q for i, q in enumerate(qids) if i % folds != f]
        cal = fit_calibrator([features[q] for q in train], [outcomes[q] for q in train], **info)
        confidences += [cal.predict(features[q]) for q in test]
        ys += [outcomes[q] for q in test]
    return expected_calibration_error(confidences, ys)


def evaluate_retrieval(
    retriever: Retriever,
    dataset: BeirDataset,
    *,
    k: int = 10,
    modes: Sequence[str] = MODES,
    default_mode: str | None = None,
    calibrator: Calibrator | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """The JSON the ``eval retrieval`` command prints: the default mode's metrics and ``by_mode``."""
    default_mode = default_mode or retriever.config.mode
    ks = sorted({k, 10, 100})
    by_mode: dict[str, dict[str, Any]] = {}
    runs: dict[str, QueryRun] = {}
    for mode in dict.fromkeys([default_mode, *modes]):
        run = run_queries(retriever, dataset, mode, depth=max(ks), progress=progress)
        runs[mode] = run
        metrics = evaluate_run(run.ranked, {q: dataset.qrels[q] for q in run.ranked}, ks)
        outcomes = _hit_at(run, dataset, k)
        scorer = calibrator.predict if calibrator is not None else default_confidence
        confidences = {q: scorer(run.features[q]) for q in run.ranked}
        row = {
            f"ndcg@{k}": metrics[f"ndcg@{k}"], f"recall@{k}": metrics[f"recall@{k}"], "recall@100": metrics["recall@100"],
            f"mrr@{k}": metrics[f"mrr@{k}"], "ece": expected_calibration_error([confidences[q] for q in outcomes], list(outcomes.values())),
            "ece_crossfit": crossfit_ece(run.features, outcomes, k=k, mode=mode),
            "hit_rate": sum(outcomes.values()) / len(outcomes) if outcomes else 0.0,
            "queries": int(metrics["queries"]), "ms_per_query": 1000 * run.seconds / max(1, len(run.ranked)),
        }
        for name in ("ndcg@10", "recall@10", "mrr@10"):
            row.setdefault(name, metrics[name])
        by_mode[mode] = row
    top = by_mode[default_mode]
    others = {mode: row["ndcg@10"] for mode, row in by_mode.items() if mode != default_mode and mode in ("vector", "text", "rrf")}
    best_other = max(others, key=lambda m: others[m]) if others else None
    return {
        "dataset": dataset.name, "mode": default_mode, "k": k, "queries": top["queries"],
        "ndcg@10": top["ndcg@10"], "recall@10": top["recall@10"], "recall@100": top["recall@100"], "mrr@10": top["mrr@10"],
        "ece": top["ece"], "ece_crossfit": top["ece_crossfit"],
        "confidence": "calibrator" if calibrator is not None else "conservative default",
        "by_mode": by_mode,
        # the default's nDCG@10 minus the best of its own rankers and RRF (>= 0: the default is worth having)
        "margin_over_best_other": top["ndcg@10"] - others[best_other] if best_other else None,
        "best_other_mode": best_other,
    }
