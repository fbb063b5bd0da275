"""Routing evaluation sets: a BEIR-format knowledge base ingested into a home, and CLINC150 converted to one.

``build_kb_home`` writes ``corpus.jsonl`` (lines ``{_id, title, text}``) as Markdown files
into a home and ingests them with the ordinary pipeline; ``convert_clinc150`` builds such a
knowledge base and a labelled query file (``questions.load_questions``) from CLINC150.
``routing_eval`` runs the queries against the home.
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

from context_store.errors import InputRejected, InvalidRequest
from context_store.index.embed.protocol import Embedder
from context_store.index.ingest import ingest
from context_store.store.context_store import ContextStore

__all__ = ["SOURCE", "build_kb_home", "convert_clinc150"]

SOURCE = "kb"


def _file_name(doc_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", doc_id).strip("._") or "doc"
    return f"{safe}.md"


def build_kb_home(kb_dir: Path, home: Path, embedder: Embedder) -> tuple[ContextStore, dict[str, str]]:
    """Write ``corpus.jsonl`` as Markdown files into ``home`` and ingest them; returns (store, our doc id -> BEIR _id)."""
    corpus = Path(kb_dir) / "corpus.jsonl"
    if not corpus.is_file():
        raise InvalidRequest(f"{kb_dir}: no corpus.jsonl (expected a BEIR-format directory)")
    files = home / "kb_files"
    files.mkdir(parents=True, exist_ok=True)
    mapping: dict[str, str] = {}
    for n, line in enumerate(corpus.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputRejected("malformed_json", f"{corpus}:{n}: {exc}") from exc
        beir_id = str(row.get("_id", "")).strip()
        if not beir_id:
            raise InputRejected("bad_document", f"{corpus}:{n}: no _id")
        name = _file_name(beir_id)
        if f"{SOURCE}/{name}" in mapping and mapping[f"{SOURCE}/{name}"] != beir_id:
            name = f"{name[:-3]}-{n}.md"
        title = " ".join(str(row.get("title") or beir_id).split())
        body = str(row.get("text") or "").strip() or title
        path = files / name
        content = f"# {title}\n\n{body}\n"
        if not path.exists() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
        mapping[f"{SOURCE}/{name}"] = beir_id
    store = ContextStore.open(home, company_sources=[{"name": SOURCE, "path": str(files)}])
    store.settings.save()
    ingest(store, embedder)
    return store, mapping


def convert_clinc150(
    src: Path, out: Path, *, kb_domains: int = 5, examples_per_intent: int = 20, queries_per_intent: int = 10,
    oos_queries: int = 500, seed: int = 7,
) -> dict[str, Any]:
    """Build a BEIR KB + labelled query file from CLINC150.

    The KB holds one document per intent of ``kb_domains`` randomly chosen domains (its
    title, and ``examples_per_intent`` *training* utterances as the text). Queries come
    from the *test* split: intents in the KB are answerable (expected: their document),
    intents of the held-out domains and out-of-scope utterances are unanswerable.
    """
    data = Path(src) / "clinc150_full.jsonl"
    domains_file = Path(src) / "domains.json"
    if not data.is_file() or not domains_file.is_file():
        raise InvalidRequest(f"{src}: expected clinc150_full.jsonl and domains.json")
    domains: dict[str, list[str]] = json.loads(domains_file.read_text())
    rng = random.Random(seed)
    names = sorted(domains)
    if not 1 <= kb_domains < len(names):
        raise InvalidRequest(f"kb_domains must be between 1 and {len(names) - 1}")
    in_kb = sorted(rng.sample(names, kb_domains))
    kb_intents = {i for d in in_kb for i in domains[d]}
    train: dict[str, list[str]] = {}
    test: dict[str, list[str]] = {}
    for line in data.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        bucket = train if row["split"] == "train" else test if row["split"] == "test" else None
        if bucket is not None:
            bucket.setdefault(row["intent"], []).append(row["text"])
    out.mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for intent in sorted(kb_intents):
            examples = rng.sample(train[intent], min(examples_per_intent, len(train[intent])))
            title = intent.replace("_", " ").capitalize()
            fh.write(json.dumps({"_id": intent, "title": title, "text": "\n".join(f"- {e}" for e in examples)}) + "\n")
    queries: list[dict[str, Any]] = []
    for intent in sorted(i for i in test if i != "oos"):
        for text in rng.sample(test[intent], min(queries_per_intent, len(test[intent]))):
            if intent in kb_intents:
                queries.append({"text": text, "answerable": True, "expected_doc_ids": [intent]})
            else:
                queries.append({"text": text, "answerable": False, "source": "held_out_domain"})
    for text in rng.sample(test.get("oos", []), min(oos_queries, len(test.get("oos", [])))):
        queries.append({"text": text, "answerable": False, "source": "out_of_scope"})
    rng.shuffle(queries)
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for q in queries:
            fh.write(json.dumps(q) + "\n")
    summary = {"kb_domains": in_kb, "documents": len(kb_intents), "queries": len(queries),
               "answerable": sum(q["answerable"] for q in queries), "seed": seed}
    (out / "README.json").write_text(json.dumps(summary, indent=2))
    return summary
