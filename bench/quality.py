"""Retrieval quality of every mode, side by side, on every open labelled set (``bench/open_sets.py``):
StackFAQ, the Plausible headings set, the demo golden set and CLINC150 as BEIR.

Each set is ingested into a fresh home through the real pipeline (Dagster ingest assets),
then hybrid (the default: learned fusion), vector, text and plain RRF rank every judged query
in the same run, and hybrid/text/RRF again with the other full-text ranker (in-memory BM25 vs
LanceDB's FTS index; suffixed ``[lancedb]`` or ``[memory]``). Prints nDCG@10 / Recall@10 /
Recall@100 / MRR@10 per mode, and the default's margin over the best of vector, text and RRF
per set (``margin_over_best_other``, ``best_other_mode``; the goal is >= 0 on every set). The
fusion weights' provenance (``bench/train_fusion.py``) holds the leave-one-set-out figures: the
ones here are measured with weights fitted on all of these sets. The cross-encoder rerank
row is reported as skipped unless one is installed locally (none is bundled).

    python bench/quality.py [--cache DIR] [--sets a,b] [--max-queries N] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _one_set(name: str, directory: Path, work: Path, args: argparse.Namespace) -> dict:
    from context_store.measure.beir import load_beir
    from context_store.measure.retrieval_eval import evaluate_retrieval
    from context_store.retrieve import Retriever
    from pipeline.cli.eval_retrieval import beir_home, retriever_for

    dataset = load_beir(directory)
    if args.max_queries:
        keep = list(dataset.judged_queries())[: args.max_queries]
        dataset.queries = {q: dataset.queries[q] for q in keep}
    with beir_home(dataset, work / f"home-{name}" if args.cache else None) as home:
        retriever = retriever_for(home, work / "model_home")
        report = evaluate_retrieval(retriever, dataset, k=10)
        # The same rankings with the other full-text ranker (the API's default is the in-memory
        # BM25 beside the dense snapshot, context_store/retrieve/text_index.py), side by side.
        other = "lancedb" if retriever.config.text_ranker == "memory" else "memory"
        config = retriever.config.model_copy(update={"text_ranker": other})
        alt = Retriever(retriever.store, retriever.embedder, config=config, dense=retriever.dense)
        alt_rows = evaluate_retrieval(alt, dataset, k=10, modes=["hybrid", "text", "rrf"])["by_mode"]
        report["by_mode"].update({f"{m}[{other}]": row for m, row in alt_rows.items()})
    return report


def main() -> None:
    from bench.open_sets import SET_NAMES, open_sets
    from context_store.retrieve.fusion_model import load_fusion_model
    from context_store.settings import Settings

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=None, help="keep the built sets and ingested homes here and reuse them")
    parser.add_argument("--sets", default=",".join(SET_NAMES))
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    work = args.cache or Path(tempfile.mkdtemp(prefix="freshcontext-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    reranker = Settings.load(work / "model_home").retrieval.reranker
    report: dict[str, dict] = {}
    for name, directory in open_sets(work, tuple(args.sets.split(","))).items():
        report[name] = _one_set(name, directory, work, args)
        report[name]["rerank"] = "skipped: no cross-encoder installed" if not reranker else f"configured: {reranker}"
    fusion = load_fusion_model().provenance
    summary = {"fusion_weights": {k: fusion.get(k) for k in ("date", "commit", "sets", "gate_center", "protocol")},
               "default_at_least_every_other_mode": all((r["margin_over_best_other"] or 0) >= 0 for r in report.values())}
    if args.json:
        print(json.dumps({"sets": report, **summary}))
        return
    for name, r in report.items():
        print(f"\n{name}: {r['queries']} queries (default mode: {r['mode']}; rerank {r['rerank']})")
        print(f"{'mode':<16} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'ms/q':>6}")
        for mode, row in r["by_mode"].items():
            print(f"{mode:<16} {row['ndcg@10']:>8.4f} {row['recall@10']:>7.4f} {row['recall@100']:>7.4f} {row['mrr@10']:>7.4f} {row['ms_per_query']:>6.1f}")
        print(f"default - best of vector/text/rrf ({r['best_other_mode']}) nDCG@10: {r['margin_over_best_other']:+.4f}")
    print(f"\n{summary}")


if __name__ == "__main__":
    main()
