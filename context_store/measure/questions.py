"""Labelled questions: the one reader of golden sets and routing query files.

A labelled-question file is JSONL, one question per line::

    {"id": "q005", "text": "...", "answerable": true, "expected_doc_ids": ["company/orders/returns.md"],
     "answer_changed": true, "expected_phrase": "6.50 EUR", "old_phrase": "4.95 EUR"}

Only ``text`` and ``answerable`` are required. A golden set about a home's own documents
(``golden.evaluate_golden``) scores answerable questions by their ``expected_doc_ids``, so it
loads with ``answerable_need_docs=True``; a routing query file (``routing_eval``, e.g. one
built from CLINC150) may leave them out: any answer to an answerable question then counts as
right. ``id`` defaults to ``line-N`` and must be unique; an ``answer_changed`` question (the
right answer changed between versions of a document) needs both phrases. Every error names
the file and the line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from context_store.errors import InputRejected

__all__ = ["LabelledQuestion", "load_questions"]


@dataclass
class LabelledQuestion:
    id: str
    text: str
    answerable: bool
    expected_doc_ids: list[str] = field(default_factory=list)
    answer_changed: bool = False
    expected_phrase: str | None = None
    old_phrase: str | None = None


def _question(row: Any, where: str, n: int, answerable_need_docs: bool) -> LabelledQuestion:
    if not isinstance(row, dict) or not isinstance(row.get("text"), str) or not row["text"].strip():
        raise InputRejected("bad_question", f"{where}: expected an object with a non-empty 'text'")
    if not isinstance(row.get("answerable"), bool):
        raise InputRejected("bad_question", f"{where}: 'answerable' must be true or false")
    expected = row.get("expected_doc_ids") or []
    if not isinstance(expected, list) or not all(isinstance(d, str) and d for d in expected):
        raise InputRejected("bad_question", f"{where}: 'expected_doc_ids' must be a list of document ids")
    if answerable_need_docs and row["answerable"] and not expected:
        raise InputRejected("bad_question", f"{where}: an answerable question needs expected_doc_ids")
    changed = bool(row.get("answer_changed"))
    if changed and not (row.get("expected_phrase") and row.get("old_phrase")):
        raise InputRejected("bad_question", f"{where}: an answer_changed question needs expected_phrase and old_phrase")
    return LabelledQuestion(
        id=str(row.get("id") or f"line-{n}"), text=row["text"].strip(), answerable=row["answerable"], expected_doc_ids=expected,
        answer_changed=changed, expected_phrase=row.get("expected_phrase"), old_phrase=row.get("old_phrase"),
    )


def load_questions(path: str | Path, *, answerable_need_docs: bool = True) -> list[LabelledQuestion]:
    """Read and validate a labelled-question file; a bad line is an error naming the file, the line and the field."""
    source = Path(path)
    if not source.is_file():
        raise InputRejected("not_found", f"question file {source} does not exist")
    out: list[LabelledQuestion] = []
    seen: set[str] = set()
    for n, line in enumerate(source.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputRejected("malformed_json", f"{where}: {exc.msg}") from exc
        question = _question(row, where, n, answerable_need_docs)
        if question.id in seen:
            raise InputRejected("bad_question", f"{where}: duplicate id {question.id!r}")
        seen.add(question.id)
        out.append(question)
    if not out:
        raise InputRejected("empty", f"question file {source} holds no questions")
    return out
