"""BEIR-format data sets: load them, and write a corpus into a source folder for ingest.

A BEIR directory holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
(``_id``, ``text``) and ``qrels.tsv`` (or ``qrels/test.tsv``: ``query-id``, ``corpus-id``,
``score``). Evaluations ingest the corpus through the real pipeline, so each document is
written as one Markdown file whose name encodes its BEIR id; ``beir_id_for`` maps a
retrieved ``doc_id`` back.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote

import yaml

from context_store.errors import InputRejected

__all__ = ["BeirDataset", "beir_id_for", "file_name_for", "load_beir", "write_corpus"]


@dataclass
class BeirDataset:
    name: str
    corpus: dict[str, dict[str, str]]  # id -> {"title", "text"}
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]] = field(default_factory=dict)

    def judged_queries(self) -> dict[str, str]:
        """Queries with at least one relevant document that exists in the corpus."""
        return {
            q: text for q, text in self.queries.items()
            if any(r > 0 and d in self.corpus for d, r in self.qrels.get(q, {}).items())
        }


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputRejected("malformed_json", f"{path}:{n}: {exc.msg}") from exc
            if not isinstance(row, dict) or "_id" not in row:
                raise InputRejected("missing_field", f"{path}:{n}: expected an object with an _id")
            rows.append(row)
    return rows


def load_beir(directory: str | Path) -> BeirDataset:
    root = Path(directory)
    if not root.is_dir():
        raise InputRejected("not_found", f"{root} is not a directory")
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (root / name).is_file():
            raise InputRejected("not_found", f"{root} has no {name} (BEIR format: corpus.jsonl, queries.jsonl, qrels.tsv)")
    qrels_path = next((p for p in (root / "qrels.tsv", root / "qrels" / "test.tsv") if p.is_file()), None)
    if qrels_path is None:
        raise InputRejected("not_found", f"{root} has neither qrels.tsv nor qrels/test.tsv")
    corpus = {
        str(r["_id"]): {"title": str(r.get("title") or ""), "text": str(r.get("text") or "")}
        for r in _read_jsonl(root / "corpus.jsonl")
    }
    queries = {str(r["_id"]): str(r.get("text") or "") for r in _read_jsonl(root / "queries.jsonl")}
    qrels: dict[str, dict[str, int]] = {}
    with qrels_path.open(encoding="utf-8", newline="") as fh:
        for n, row in enumerate(csv.reader(fh, delimiter="\t"), 1):
            if not row or (n == 1 and row[0] == "query-id"):
                continue
            if len(row) < 3:
                raise InputRejected("malformed_qrels", f"{qrels_path}:{n}: expected query-id, corpus-id, score")
            try:
                score = int(float(row[2]))
            except ValueError as exc:
                raise InputRejected("malformed_qrels", f"{qrels_path}:{n}: score {row[2]!r} is not a number") from exc
            qrels.setdefault(row[0], {})[row[1]] = score
    return BeirDataset(name=root.name, corpus=corpus, queries=queries, qrels=qrels)


def file_name_for(beir_id: str) -> str:
    # Percent-encode anything a file name cannot hold; a leading dot would be a hidden file.
    encoded = quote(beir_id, safe="-_")
    return encoded.replace(".", "%2E") + ".md"


def beir_id_for(doc_id: str) -> str:
    """``<source>/<file name>`` back to the BEIR id it was written from."""
    name = doc_id.rsplit("/", 1)[-1]
    return unquote(name.removesuffix(".md"))


def write_corpus(dataset: BeirDataset, folder: str | Path) -> int:
    """One Markdown file per document (title in front matter); returns how many were written.

    Empty documents are written too: the pipeline records them as skipped inputs, as it
    would in production, rather than this loader hiding them.
    """
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    for beir_id, doc in dataset.corpus.items():
        front = yaml.safe_dump({"title": doc["title"] or beir_id}, allow_unicode=True, width=10_000).strip()
        (out / file_name_for(beir_id)).write_text(f"---\n{front}\n---\n{doc['text']}\n", encoding="utf-8")
    return len(dataset.corpus)
