"""Retrieval quality of every mode, side by side, on StackFAQ and on the Plausible headings set.

Each set is ingested into a fresh home through the real pipeline (Dagster ingest assets),
then hybrid (the default), vector, text and plain RRF rank every judged query in the same
run, and hybrid/text/RRF again with the other full-text ranker (in-memory BM25 vs LanceDB's
FTS index; suffixed ``[lancedb]`` or ``[memory]``). Prints nDCG@10 / Recall@10 / Recall@100 / MRR@10 per mode and the ratio of the
default mode to the best single mode (vector or text) per set. The cross-encoder rerank
row is reported as skipped unless one is installed locally (none is bundled).

    python bench/quality.py [--cache DIR] [--max-queries N] [--json]
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
DATA = REPO.parent / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, default=None, help="keep the ingested homes here and reuse them")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    from bench.plausible_set import build_plausible_set
    from context_store.measure.beir import load_beir
    from context_store.measure.retrieval_eval import evaluate_retrieval
    from context_store.retrieve.retriever import Retriever
    from context_store.settings import Settings
    from pipeline.cli.eval_retrieval import beir_home, retriever_for

    work = args.cache or Path(tempfile.mkdtemp(prefix="freshcontext-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    plausible_dir = work / "plausible_beir"
    if not (plausible_dir / "qrels.tsv").exists():
        build_plausible_set(DATA / "plausible_docs_history", plausible_dir)
    sets = {"stackfaq": DATA / "stackfaq", "plausible_headings": plausible_dir}
    reranker = Settings.load(work / "model_home").retrieval.reranker
    report: dict[str, dict] = {}
    for name, directory in sets.items():
        dataset = load_beir(directory)
        if args.max_queries:
            keep = list(dataset.judged_queries())[: args.max_queries]
            dataset.queries = {q: dataset.queries[q] for q in keep}
        with beir_home(dataset, work / f"home-{name}" if args.cache else None) as home:
            retriever = retriever_for(home, work / "model_home")
            report[name] = evaluate_retrieval(retriever, dataset, k=10)
            # The same rankings with LanceDB's FTS index as the text ranker (the API's default is the
            # in-memory BM25 beside the dense snapshot, context_store/retrieve/text_index.py), side by side.
            other = "lancedb" if retriever.config.text_ranker == "memory" else "memory"
            alt = Retriever(retriever.store, retriever.embedder, config=retriever.config.model_copy(update={"text_ranker": other}), dense=retriever.dense)
            alt_rows = evaluate_retrieval(alt, dataset, k=10, modes=["hybrid", "text", "rrf"])["by_mode"]
            report[name]["by_mode"].update({f"{m}[{other}]": row for m, row in alt_rows.items()})
        rows = report[name]["by_mode"]
        best_single = max(rows["vector"]["ndcg@10"], rows["text"]["ndcg@10"])
        report[name]["default_vs_best_single_ndcg"] = rows[report[name]["mode"]]["ndcg@10"] / best_single
        report[name]["rerank"] = "skipped: no cross-encoder installed" if not reranker else f"configured: {reranker}"
    if args.json:
        print(json.dumps(report))
        return
    for name, r in report.items():
        print(f"\n{name}: {r['queries']} queries (default mode: {r['mode']}; rerank {r['rerank']})")
        print(f"{'mode':<16} {'nDCG@10':>8} {'R@10':>7} {'R@100':>7} {'MRR@10':>7} {'ms/q':>6}")
        for mode, row in r["by_mode"].items():
            print(f"{mode:<16} {row['ndcg@10']:>8.4f} {row['recall@10']:>7.4f} {row['recall@100']:>7.4f} {row['mrr@10']:>7.4f} {row['ms_per_query']:>6.1f}")
        print(f"default / best single mode nDCG@10: {r['default_vs_best_single_ndcg']:.4f}")


if __name__ == "__main__":
    main()
