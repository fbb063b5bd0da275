"""Build an open BEIR set from the Plausible Analytics docs history (../shared/data/plausible_docs_history).

The help centre is replayed to its newest commit (132 Markdown articles). Each section
heading (## or ###) that names one article only becomes a query whose relevant document is
that article; the heading line itself is removed from the article, so a query never
matches its answer verbatim and both rankers have to find the section by its content.

    python bench/plausible_set.py OUT_DIR      # writes corpus.jsonl, queries.jsonl, qrels.tsv
"""

from __future__ import annotations

import gzip
import json
import re
import sys
from collections import Counter
from pathlib import Path

__all__ = ["build_plausible_set", "replay_head"]

_HEADING = re.compile(r"^(#{2,3})\s+(.+?)\s*#*\s*$")
_FRONT = re.compile(r"\A---\s*\n(.*?\n)---\s*\n", re.DOTALL)


def replay_head(history: Path) -> dict[str, str]:
    """Path -> text of every live file after the last commit."""
    blobs: dict[str, str] = {}
    with gzip.open(history / "blobs.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            blobs[row["blob"]] = row["text"]
    live: dict[str, str] = {}
    with (history / "changes.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            for change in json.loads(line)["changes"]:
                if change["status"] == "D":
                    live.pop(change["path"], None)
                    continue
                if change["status"] == "R":
                    live.pop(change["old_path"], None)
                live[change["path"]] = blobs[change["blob"]]
    return live


def _title(path: str, text: str) -> str:
    front = _FRONT.match(text)
    if front:
        for line in front.group(1).splitlines():
            if line.startswith("title:"):
                return line.split(":", 1)[1].strip().strip("'\"")
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return Path(path).stem.replace("-", " ")


def build_plausible_set(history: Path, out: Path, *, min_words: int = 2) -> dict[str, int]:
    articles = {p: t for p, t in replay_head(history).items() if p.endswith((".md", ".mdx"))}
    headings: dict[str, list[tuple[str, str]]] = {}
    counts: Counter[str] = Counter()
    for path, text in articles.items():
        found = []
        in_fence = False
        for line in text.splitlines():
            if line.lstrip().startswith(("```", "~~~")):
                in_fence = not in_fence
            m = None if in_fence else _HEADING.match(line)
            if m:
                clean = re.sub(r"[`*_\[\]]|\(.*?\)|<.*?>|\{#.*?\}", "", m.group(2)).strip()
                if len(clean.split()) >= min_words:
                    found.append((line, clean))
        headings[path] = found
        counts.update({h.lower() for _, h in found})
    out.mkdir(parents=True, exist_ok=True)
    n_queries = 0
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as corpus, (out / "queries.jsonl").open("w", encoding="utf-8") as queries, (out / "qrels.tsv").open("w", encoding="utf-8") as qrels:
        qrels.write("query-id\tcorpus-id\tscore\n")
        for path in sorted(articles):
            doc_id = path.removeprefix("docs/").rsplit(".", 1)[0]
            text = _FRONT.sub("", articles[path])
            used = [(line, h) for line, h in headings[path] if counts[h.lower()] == 1]
            removed = {line for line, _ in used}
            body = "\n".join(line for line in text.splitlines() if line not in removed)
            corpus.write(json.dumps({"_id": doc_id, "title": _title(path, articles[path]), "text": body}) + "\n")
            for i, (_, heading) in enumerate(used):
                qid = f"{doc_id}#h{i}"
                queries.write(json.dumps({"_id": qid, "text": heading}) + "\n")
                qrels.write(f"{qid}\t{doc_id}\t1\n")
                n_queries += 1
    return {"documents": len(articles), "queries": n_queries}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    here = Path(__file__).resolve().parents[1]
    print(build_plausible_set(here.parent / "shared" / "data" / "plausible_docs_history", Path(sys.argv[1])))
