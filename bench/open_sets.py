"""The open labelled sets retrieval is measured and its fusion trained on, each as a BEIR folder.

    stackfaq            ../shared/data/stackfaq as it is (FAQ answers, human rephrasings)
    plausible_headings  the Plausible help centre, section headings as queries (``plausible_set``)
    demo_golden         demo/company with the answerable questions of demo/golden/questions.jsonl
    clinc150            CLINC150: one document per intent (its name and 20 training utterances),
                        queries from the test split, 5 per intent (seeded)

Built sets are written under a work folder and reused. None of them is copied into the repo.

    python bench/open_sets.py OUT_DIR
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

__all__ = ["DATA", "SET_NAMES", "build_clinc_set", "build_golden_set", "open_sets"]

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
SET_NAMES = ("stackfaq", "plausible_headings", "demo_golden", "clinc150")


def _write_beir(out: Path, corpus: list[dict], queries: list[dict], qrels: list[tuple[str, str]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus), encoding="utf-8")
    (out / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries), encoding="utf-8")
    (out / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"{q}\t{d}\t1\n" for q, d in qrels), encoding="utf-8")


def build_golden_set(demo: Path, out: Path) -> dict[str, int]:
    """demo/company parsed as the pipeline parses it; one query per answerable golden question."""
    from context_store.state.sources import COMPANY_SUFFIXES, parse_company_file

    corpus = []
    for path in sorted((demo / "company").rglob("*")):
        if path.is_file() and path.suffix.lower() in COMPANY_SUFFIXES and path.name != "README.md":
            doc = parse_company_file(path, path.read_bytes())
            corpus.append({"_id": "company/" + path.relative_to(demo / "company").as_posix(), "title": doc.title, "text": doc.text})
    queries, qrels = [], []
    for line in (demo / "golden" / "questions.jsonl").read_text(encoding="utf-8").splitlines():
        q = json.loads(line)
        if q.get("answerable") and q.get("expected_doc_ids"):
            queries.append({"_id": q["id"], "text": q["text"]})
            qrels += [(q["id"], d) for d in q["expected_doc_ids"]]
    _write_beir(out, corpus, queries, qrels)
    return {"documents": len(corpus), "queries": len(queries)}


def build_clinc_set(clinc: Path, out: Path, *, examples_per_intent: int = 20, queries_per_intent: int = 5, seed: int = 7) -> dict[str, int]:
    """Every in-scope intent as a document (the format ``routing_eval.convert_clinc150`` uses)."""
    rng = random.Random(seed)
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for line in (clinc / "clinc150_full.jsonl").read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        bucket = train if row["split"] == "train" else test if row["split"] == "test" else None
        if bucket is not None and row["intent"] != "oos":
            bucket.setdefault(row["intent"], []).append(row["text"])
    corpus, queries, qrels = [], [], []
    for intent in sorted(train):
        examples = rng.sample(train[intent], min(examples_per_intent, len(train[intent])))
        corpus.append({"_id": intent, "title": intent.replace("_", " ").capitalize(), "text": "\n".join(f"- {e}" for e in examples)})
        for i, text in enumerate(rng.sample(test.get(intent, []), min(queries_per_intent, len(test.get(intent, []))))):
            queries.append({"_id": f"{intent}#{i}", "text": text})
            qrels.append((f"{intent}#{i}", intent))
    _write_beir(out, corpus, queries, qrels)
    return {"documents": len(corpus), "queries": len(queries)}


def open_sets(work: Path, names: tuple[str, ...] = SET_NAMES) -> dict[str, Path]:
    """Name -> BEIR folder of every open set, built under ``work`` when not there yet."""
    from bench.plausible_set import build_plausible_set

    builders = {
        "plausible_headings": lambda out: build_plausible_set(DATA / "plausible_docs_history", out),
        "demo_golden": lambda out: build_golden_set(REPO / "demo", out),
        "clinc150": lambda out: build_clinc_set(DATA / "clinc150", out),
    }
    found: dict[str, Path] = {}
    for name in names:
        if name == "stackfaq":
            found[name] = DATA / "stackfaq"
            continue
        out = work / f"{name}_beir"
        if not (out / "qrels.tsv").exists():
            builders[name](out)
        found[name] = out
    return found


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.path.insert(0, str(REPO))
    print({name: str(path) for name, path in open_sets(Path(sys.argv[1])).items()})
