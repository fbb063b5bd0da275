"""Promotion gate on the demo help centre: chunker settings side by side, as the gate would judge them.

Ingests the demo (original articles, then the edits) into a fresh home with the real model,
then for each ``--max-chars`` value builds the candidate index beside the live one
(``index.candidate.build_candidate``), evaluates it on the golden set and prints nDCG@10, MRR@10,
the answer-changed win rate, build time, chunks embedded and the gate's verdict against the
live index (max_chars 1000). Also times one golden-set evaluation of the live index.

    python bench/promotion.py [--max-chars 400 600 1500] [--json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from context_store.index.candidate import build_candidate  # noqa: E402
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder  # noqa: E402
from context_store.index.ingest import ingest  # noqa: E402
from context_store.measure.gate import evaluate_gate  # noqa: E402
from context_store.measure.quality import evaluate_retrieval_quality  # noqa: E402
from context_store.settings import Settings  # noqa: E402
from context_store.store.context_store import ContextStore  # noqa: E402

DEMO = ROOT / "demo"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-chars", type=int, nargs="+", default=[400, 600, 1500])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="fc-bench-promotion-"))
    try:
        company = home / "sources" / "company"
        shutil.copytree(DEMO / "company", company)
        Settings.load(home, company_sources=[{"name": "company", "path": str(company)}],
                      quality={"golden_sets": [{"name": "demo", "path": str(DEMO / "golden" / "questions.jsonl")}]}).save()
        embedder = SentenceTransformerEmbedder()
        t = time.perf_counter()
        ingest(ContextStore.open(home), embedder)
        for src in (DEMO / "company_edits").rglob("*"):
            if src.is_file() and src.name != "README.md":
                shutil.copyfile(src, company / src.relative_to(DEMO / "company_edits"))
        ingest(ContextStore.open(home), embedder)
        ingest_s = time.perf_counter() - t
        live_store = ContextStore.open(home)
        t = time.perf_counter()
        live = evaluate_retrieval_quality(live_store, embedder).sets[0].metrics
        eval_s = time.perf_counter() - t
        rows = [{"max_chars": 1000, "role": "live", **{k: live[k] for k in ("ndcg@10", "mrr@10", "answer_changed_current_wins")}}]
        for max_chars in args.max_chars:
            settings = Settings.load(home)
            settings.chunking.max_chars = max_chars
            settings.save()
            store = ContextStore.open(home)
            t = time.perf_counter()
            build = build_candidate(store, embedder)
            build_s = time.perf_counter() - t
            gate = evaluate_gate(store, embedder, embedder, build.store, trigger="bench")
            m = gate.candidate_metrics["demo"]
            rows.append({"max_chars": max_chars, "role": "candidate", "ndcg@10": m["ndcg@10"], "mrr@10": m["mrr@10"],
                         "answer_changed_current_wins": m.get("answer_changed_current_wins"), "build_s": round(build_s, 2),
                         "chunks_embedded": build.chunks_embedded, "gate": "pass" if gate.passed else "reject"})
        result = {"ingest_s": round(ingest_s, 2), "golden_eval_s": round(eval_s, 2), "questions": int(live["queries"]), "rows": rows}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    if args.json:
        print(json.dumps(result))
        return
    print(f"demo ingest {result['ingest_s']} s; one golden evaluation ({result['questions']} questions) {result['golden_eval_s']} s")
    print(f"{'max_chars':>9} {'role':<10} {'nDCG@10':>8} {'MRR@10':>7} {'changed':>8} {'build s':>8} {'embedded':>9} gate")
    for r in rows:
        print(f"{r['max_chars']:>9} {r['role']:<10} {r['ndcg@10']:>8.4f} {r['mrr@10']:>7.4f} {r['answer_changed_current_wins'] or 0:>8.3f} "
              f"{r.get('build_s', ''):>8} {r.get('chunks_embedded', ''):>9} {r.get('gate', '')}")


if __name__ == "__main__":
    main()
