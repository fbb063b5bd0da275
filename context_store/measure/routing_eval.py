"""Routing quality on labelled queries: does the policy answer what it can and escalate what it cannot?

Input: a labelled query file (``questions.load_questions``: lines ``{text, answerable,
expected_doc_ids?}``) against a store, or a BEIR-format knowledge base that ``routing_sets``
ingests into a fresh home first. Every query runs through the flow that serves:
``route.respond.respond(..., record=False)`` retrieves (the configured mode), computes the
confidence features, the served confidence and the outcome signals (triggers), and decides —
only routing, logging and the trace are switched off.

An *answered* query is correct when it is answerable and, if ``expected_doc_ids`` is
given, its top result is one of them. Reported for the calibrated policy and, in the same
run, for a raw top-1 similarity baseline:

- ``coverage_at_90`` / ``coverage_at_95``: the largest share of queries that can be
  answered (highest score first) while answer precision stays >= 90 % / 95 %;
- ``aurc``: area under the risk-coverage curve (lower is better);
- ``ece``: expected calibration error of the score as P(correct), 10 equal-width bins
  (``ir_metrics``; the raw cosine of the baseline is clipped into [0, 1] first);
- ``escalation_precision`` / ``escalation_recall``: for unanswerable queries, at the
  operating threshold (fitted on the training folds to ``target_precision``).

Confidence is the API's calibrator (``confidence.fit_calibrator``: logistic regression over
``confidence.FEATURES``), *cross-fitted*: each query's confidence comes from a calibrator
fitted on the other folds, never on the query itself; the policy's decision per query is
``decision.decide(result, that confidence, its fold's threshold, extra_reasons=the outcome
signals)``. The baseline is the raw top-1 dense cosine (``dense_top``) with a threshold fitted
the same way, escalating too whenever ``decide`` had another reason than low confidence. The
API's uncalibrated conservative default at its threshold is reported (``uncalibrated_default``),
and so is the confidence the API itself serves for this store, with its decisions (``served``:
the home's fitted calibrator, else the default).
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from context_store.errors import InvalidRequest
from context_store.index.embed.protocol import Embedder
from context_store.measure.ir_metrics import aurc, coverage_at_precision, expected_calibration_error, threshold_at_precision
from context_store.measure.prefetch import PrefetchedEmbedder
from context_store.measure.questions import LabelledQuestion, load_questions
from context_store.measure.routing_sets import build_kb_home
from context_store.retrieve.retriever import Retriever
from context_store.route.confidence import CALIBRATOR_FILE, FEATURES, default_confidence, fit_calibrator, load_calibrator
from context_store.route.decision import ESCALATE, LOW_CONFIDENCE, NO_RESULTS, Decision, Reason, decide
from context_store.route.policy import RoutingConfig
from context_store.route.respond import Question, Responder, Response, respond
from context_store.store.context_store import ContextStore

__all__ = ["RoutingEvalReport", "answered_right", "decide_all", "escalation_scores", "evaluate_routing", "respond_all", "run_routing_eval"]


def escalation_scores(escalated: Iterable[bool], answerable: Iterable[bool]) -> tuple[float, float]:
    """Precision and recall of escalation, unanswerable being the positive class."""
    e = np.asarray(list(escalated), bool)
    u = ~np.asarray(list(answerable), bool)
    tp = float((e & u).sum())
    precision = tp / e.sum() if e.sum() else 1.0
    recall = tp / u.sum() if u.sum() else 1.0
    return precision, recall


def _cross_fit(feats: list[dict[str, float]], y: np.ndarray, folds: int, seed: int, target: float) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold calibrated confidence and, per query, the threshold fitted on the other folds."""
    n = len(y)
    order = np.random.default_rng(seed).permutation(n)
    conf = np.zeros(n)
    thr = np.zeros(n)
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        calibrator = fit_calibrator([feats[i] for i in train], [bool(y[i]) for i in train])
        conf[test] = [calibrator.predict(feats[i]) for i in test]
        thr[test] = threshold_at_precision(np.array([calibrator.predict(feats[i]) for i in train]), y[train], target)
    return conf, thr


def _raw_thresholds(raw: np.ndarray, y: np.ndarray, folds: int, seed: int, target: float) -> np.ndarray:
    n = len(y)
    order = np.random.default_rng(seed).permutation(n)
    thr = np.zeros(n)
    for f in range(folds):
        test = order[f::folds]
        train = np.setdiff1d(order, test)
        thr[test] = threshold_at_precision(raw[train], y[train], target)
    return thr


@dataclass
class RoutingEvalReport:
    queries: int
    answerable: int
    policy: dict[str, Any]
    baseline: dict[str, Any]
    uncalibrated_default: dict[str, Any] = field(default_factory=dict)
    escalations_by_reason: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    served: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {**self.policy, "queries": self.queries, "answerable": self.answerable, "baseline": self.baseline,
                "uncalibrated_default": self.uncalibrated_default, "served": self.served,
                "escalations_by_reason": self.escalations_by_reason, "settings": self.settings}


def _summary(scores: np.ndarray, probs: np.ndarray, correct: np.ndarray, escalated: np.ndarray, answerable: np.ndarray, *, target: float | None = None) -> dict[str, Any]:
    precision, recall = escalation_scores(escalated, answerable)
    answered = ~escalated
    return {
        "escalation_precision": round(precision, 4),
        "escalation_recall": round(recall, 4),
        "coverage_at_90": round(coverage_at_precision(scores, correct, 0.90), 4),
        "coverage_at_95": round(coverage_at_precision(scores, correct, 0.95), 4),
        "aurc": round(aurc(scores, correct), 4),
        "ece": round(expected_calibration_error(probs, correct), 4),
        "escalation_rate": round(float(escalated.mean()), 4),
        "answer_precision": round(float(correct[answered].mean()) if answered.any() else 1.0, 4),
        **({"coverage_at_target": round(coverage_at_precision(scores, correct, target), 4)} if target is not None else {}),
    }


def run_routing_eval(
    kb_dir: Path,
    queries_path: Path,
    embedder: Embedder,
    *,
    work_dir: Path | None = None,
    folds: int = 5,
    seed: int = 13,
    target_precision: float = 0.9,
    k: int = 10,
    config: RoutingConfig | None = None,
    progress: Any = None,
) -> RoutingEvalReport:
    """Ingest the KB into a fresh (or reused ``work_dir``) home, run every query, score both policies."""
    queries = load_questions(queries_path, answerable_need_docs=False)
    if not 2 <= folds <= 20:
        raise InvalidRequest(f"folds must be between 2 and 20, got {folds}")
    tmp = None
    if work_dir is None:
        tmp = Path(tempfile.mkdtemp(prefix="freshcontext-routing-eval-"))
    home = work_dir or tmp
    assert home is not None
    try:
        store, mapping = build_kb_home(Path(kb_dir), home, embedder)
        return evaluate_routing(store, embedder, queries, mapping=mapping, folds=folds, seed=seed,
                                target_precision=target_precision, k=k, config=config, progress=progress)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def answered_right(question: LabelledQuestion, top_doc: str | None, mapping: dict[str, str] | None = None) -> bool:
    """The one label of a labelled question's response: answerable, and its top result one of its
    ``expected_doc_ids`` (any result when it names none); ``mapping`` turns our doc ids into the ids it uses."""
    top = (mapping.get(top_doc) if mapping is not None else top_doc) if top_doc is not None else None
    return bool(question.answerable and top is not None and (not question.expected_doc_ids or top in question.expected_doc_ids))


def respond_all(
    store: ContextStore, embedder: Embedder, queries: list[LabelledQuestion], *, mapping: dict[str, str] | None = None,
    k: int = 10, config: RoutingConfig | None = None, progress: Any = None,
) -> tuple[list[Response], np.ndarray]:
    """Every query through ``respond()`` as the API serves it (nothing routed, logged or traced), and whether
    answering it is correct (``answered_right``)."""
    config = config or RoutingConfig()
    retriever = Retriever(store, PrefetchedEmbedder(embedder, [q.text for q in queries]))
    responder = Responder(store, retriever, calibrator=load_calibrator(store.settings.home / CALIBRATOR_FILE), routing=config)
    responses, correct = [], []
    for i, q in enumerate(queries):
        response = respond(responder, Question(q.text, k=k), record=False)
        correct.append(answered_right(q, response.result.results[0].doc_id if response.result.results else None, mapping))
        responses.append(response)
        if progress and i % 100 == 0:
            progress(i, len(queries))
    return responses, np.array(correct, bool)


def _signals(response: Response) -> list[Reason]:
    """The outcome signals (triggers) of a response: its reasons that ``decide()`` did not raise itself."""
    return [r for r in response.decision.reasons if r.code not in (NO_RESULTS, LOW_CONFIDENCE)]


def decide_all(responses: list[Response], confidences: Iterable[float], thresholds: Iterable[float]) -> list[Decision]:
    """``decide()`` per query with another confidence and threshold, the same results and signals.

    A fold whose training part reaches the target precision at no threshold has threshold
    ``inf`` (escalate every query on confidence); ``decide`` takes thresholds in [0, 1], so
    it gets 1.0, which escalates every confidence below 1.
    """
    return [decide(r.result, float(c), min(float(t), 1.0), extra_reasons=_signals(r)) for r, c, t in zip(responses, confidences, thresholds)]


def _escalated(decisions: list[Decision]) -> np.ndarray:
    return np.array([d.decision == ESCALATE for d in decisions], bool)


def _by_reason(decisions: list[Decision]) -> dict[str, int]:
    """Questions escalated per reason code (a question escalated for two reasons counts under both)."""
    counts = Counter(code for d in decisions for code in {r.code for r in d.reasons})
    return {LOW_CONFIDENCE: 0, **counts}


def _served(responses: list[Response], y: np.ndarray, answerable: np.ndarray, threshold: float, target: float) -> dict[str, Any]:
    """The confidence the API serves for this store (its fitted calibrator, else the default), and its decisions."""
    served = np.array([r.decision.confidence for r in responses])
    sources = Counter(r.confidence_source for r in responses if r.result.results)
    return {**_summary(served, served, y, _escalated([r.decision for r in responses]), answerable, target=target),
            "confidence_source": sources.most_common(1)[0][0] if sources else "no results",
            # the threshold it decided with: the calibrator's own when it has one (respond()), else the setting
            "threshold": responses[0].decision.threshold if responses else threshold}


def evaluate_routing(
    store: ContextStore,
    embedder: Embedder,
    queries: list[LabelledQuestion],
    *,
    mapping: dict[str, str] | None = None,
    folds: int = 5,
    seed: int = 13,
    target_precision: float = 0.9,
    k: int = 10,
    config: RoutingConfig | None = None,
    progress: Any = None,
) -> RoutingEvalReport:
    """Run every labelled query against an existing store and score both policies.

    ``mapping`` turns our doc ids into the ids ``expected_doc_ids`` uses (BEIR ids); without
    it they are compared as they are (golden sets about the store's own documents).
    """
    if not 2 <= folds <= 20:
        raise InvalidRequest(f"folds must be between 2 and 20, got {folds}")
    responses, y = respond_all(store, embedder, queries, mapping=mapping, k=k, config=config or RoutingConfig(), progress=progress)
    answerable = np.array([q.answerable for q in queries], bool)
    feats = [dict(r.result.features) for r in responses]
    conf, thr = _cross_fit(feats, y.astype(int), folds, seed, target_precision)
    policy = decide_all(responses, conf, thr)
    raw = np.array([f.get("dense_top", 0.0) for f in feats])
    raw_thr = _raw_thresholds(raw, y.astype(int), folds, seed, target_precision)
    other = np.array([any(r.code != LOW_CONFIDENCE for r in d.reasons) for d in policy], bool)  # e.g. no results, a signal
    api_threshold = store.settings.retrieval.confidence_threshold
    default = np.array([default_confidence(f) if r.result.results else 0.0 for f, r in zip(feats, responses)])
    documents = len(mapping) if mapping is not None else len(store.index.ids(store.index.company_table_name, "doc_id"))
    return RoutingEvalReport(
        queries=len(queries), answerable=int(answerable.sum()),
        policy=_summary(conf, conf, y, _escalated(policy), answerable, target=target_precision),
        # the raw cosine read as P(correct) is clipped into [0, 1] for its ECE (it can be negative)
        baseline=_summary(raw, np.clip(raw, 0.0, 1.0), y, (raw < raw_thr) | other, answerable, target=target_precision),
        uncalibrated_default=_summary(default, default, y, _escalated(decide_all(responses, default, [api_threshold] * len(responses))),
                                      answerable, target=target_precision),
        served=_served(responses, y, answerable, api_threshold, target_precision),
        escalations_by_reason=_by_reason(policy),
        settings={"folds": folds, "seed": seed, "target_precision": target_precision, "k": k, "features": list(FEATURES),
                  "mode": store.settings.retrieval.mode, "model": embedder.name, "documents": documents,
                  "policy_threshold_median": round(float(np.median(thr)), 4), "baseline_threshold_median": round(float(np.median(raw_thr)), 4),
                  "uncalibrated_threshold": api_threshold},
    )
