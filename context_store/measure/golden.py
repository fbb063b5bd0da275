"""Golden sets: labelled questions about a home's own documents, and retrieval scored on them.

A golden file is a labelled-question file (``questions.load_questions`` reads it and documents
the format). ``answerable`` questions with ``expected_doc_ids`` are scored with nDCG/Recall/MRR
(``metrics``); unanswerable ones feed routing quality. For ``answer_changed`` questions
(the right answer changed between versions of a document) we also ask whether the
*current* answer wins over the superseded one: among the served chunks, the first one that
states either phrase must state the new one, and none may state the old one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from context_store.measure.ir_metrics import evaluate_run, mrr_at_k, ndcg_at_k, recall_at_k
from context_store.measure.prefetch import PrefetchedEmbedder
from context_store.measure.questions import LabelledQuestion
from context_store.retrieve.retriever import Retriever

__all__ = ["GoldenResult", "QueryOutcome", "evaluate_golden"]


@dataclass
class QueryOutcome:
    id: str
    text: str
    expected: list[str]
    returned: list[str]  # document ids, best first (top k)
    ndcg: float
    recall: float
    mrr: float
    current_wins: bool | None = None  # answer_changed questions only
    stale_served: bool | None = None


@dataclass
class GoldenResult:
    set_name: str
    metrics: dict[str, float]
    outcomes: list[QueryOutcome]
    seconds: float

    def worst(self, n: int) -> list[QueryOutcome]:
        """Lowest nDCG first; an answer-changed question that served the stale phrase counts as worst."""
        scored = [o for o in self.outcomes if o.expected]
        return sorted(scored, key=lambda o: (not o.stale_served, o.ndcg, o.mrr))[:n]

    def as_dict(self) -> dict[str, Any]:
        return {"set_name": self.set_name, "metrics": self.metrics, "seconds": self.seconds,
                "outcomes": [asdict(o) for o in self.outcomes]}


def _contains(text: str, phrase: str | None) -> bool:
    return bool(phrase) and phrase.lower() in text.lower()  # type: ignore[union-attr]


def evaluate_golden(retriever: Retriever, questions: list[LabelledQuestion], *, set_name: str, k: int = 10, mode: str | None = None) -> GoldenResult:
    """Rank every answerable question with the retriever's configured mode; chunks collapse to documents by their best chunk."""
    started = time.perf_counter()
    mode = mode or retriever.config.mode
    answerable = [q.text for q in questions if q.answerable]
    retriever = Retriever(retriever.store, PrefetchedEmbedder(retriever.embedder, answerable), config=retriever.config,
                          dense=retriever.dense, reranker=retriever.reranker)
    run: dict[str, list[str]] = {}
    qrels: dict[str, dict[str, int]] = {}
    outcomes: list[QueryOutcome] = []
    changed = [q for q in questions if q.answer_changed]
    for q in questions:
        if not q.answerable:
            continue
        hits, _ = retriever.rank_with_features(q.text, mode=mode, depth=k * 3)
        docs: list[str] = []
        for hit in hits:
            if hit.doc_id not in docs:
                docs.append(hit.doc_id)
        rel = {d: 1 for d in q.expected_doc_ids}
        run[q.id], qrels[q.id] = docs, rel
        outcome = QueryOutcome(
            q.id, q.text, q.expected_doc_ids, docs[:k], ndcg_at_k(docs, rel, k), recall_at_k(docs, rel, k), mrr_at_k(docs, rel, k),
        )
        if q.answer_changed:
            # Only chunks of the expected documents count: other articles may state "30 days" about something else.
            served = [h for h in hits[:k] if h.doc_id in q.expected_doc_ids]
            first = next((h for h in served if _contains(h.text, q.expected_phrase) or _contains(h.text, q.old_phrase)), None)
            outcome.stale_served = any(_contains(h.text, q.old_phrase) and not _contains(h.text, q.expected_phrase) for h in served)
            outcome.current_wins = first is not None and _contains(first.text, q.expected_phrase) and not outcome.stale_served
        outcomes.append(outcome)
    metrics = evaluate_run(run, qrels, ks=sorted({k, 10}))
    metrics = {name: value for name, value in metrics.items() if name != "queries"}
    metrics["queries"] = float(len(run))
    metrics["unanswerable"] = float(sum(1 for q in questions if not q.answerable))
    if changed:
        scored = [o for o in outcomes if o.current_wins is not None]
        metrics["answer_changed_questions"] = float(len(scored))
        metrics["answer_changed_current_wins"] = sum(bool(o.current_wins) for o in scored) / len(scored) if scored else 0.0
        metrics["answer_changed_stale_served"] = sum(bool(o.stale_served) for o in scored) / len(scored) if scored else 0.0
    metrics["ms_per_query"] = 1000 * (time.perf_counter() - started) / max(1, len(run))
    return GoldenResult(set_name, metrics, outcomes, time.perf_counter() - started)
