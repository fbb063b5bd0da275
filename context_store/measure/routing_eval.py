"""Routing quality on labelled queries: does the policy answer what it can and escalate what it cannot?

Input: a BEIR-format knowledge base (``corpus.jsonl`` lines ``{_id, title, text}``) and a
JSONL query file (lines ``{text, answerable, expected_doc_ids?}``, read by ``questions.load_questions``). The KB is written as
Markdown files into a fresh home and ingested by the ordinary pipeline; every query then
runs through the code ``POST /v1/retrieve`` serves with: ``Retriever.retrieve`` (the
configured mode), the confidence features it computes, ``routing_signals`` (outcome
triggers) and ``decision.decide`` — only routing and logging are switched off.

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
fitted on the other folds, never on the query itself. The baseline is the raw top-1 dense
cosine (``dense_top``) with a threshold fitted the same way. The API's uncalibrated
conservative default is reported too (``uncalibrated_default``).
"""

from __future__ import annotations

import json
import random
import re
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from context_store.errors import InputRejected, InvalidRequest
from context_store.index.embed.protocol import Embedder
from context_store.index.ingest import ingest
from context_store.measure.ir_metrics import aurc, coverage_at_precision, expected_calibration_error, threshold_at_precision
from context_store.measure.prefetch import PrefetchedEmbedder
from context_store.measure.questions import LabelledQuestion, load_questions
from context_store.retrieve.retriever import Retriever
from context_store.route.confidence import FEATURES, default_confidence, fit_calibrator
from context_store.route.policy import RoutingConfig
from context_store.route.signals import routing_signals
from context_store.store.context_store import ContextStore

__all__ = [
    "RoutingEvalReport",
    "build_kb_home",
    "convert_clinc150",
    "escalation_scores",
    "evaluate_routing",
    "run_routing_eval",
]

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


# --- metrics ------------------------------------------------------------------------------


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

    def as_dict(self) -> dict[str, Any]:
        return {**self.policy, "queries": self.queries, "answerable": self.answerable, "baseline": self.baseline,
                "uncalibrated_default": self.uncalibrated_default, "escalations_by_reason": self.escalations_by_reason, "settings": self.settings}


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
    cached = PrefetchedEmbedder(embedder, [q.text for q in queries])
    retriever = Retriever(store, cached)
    config = config or RoutingConfig()
    feats: list[dict[str, float]] = []
    rows, extra_codes = [], []
    for i, q in enumerate(queries):
        result = retriever.retrieve(q.text, k=k)
        top_doc = result.results[0].doc_id if result.results else None
        top = (mapping.get(top_doc) if mapping is not None else top_doc) if top_doc is not None else None
        correct = q.answerable and top is not None and (not q.expected_doc_ids or top in q.expected_doc_ids)
        # the outcome signals exactly as /v1/retrieve computes them (nothing routed or logged here);
        # the confidence half of decide() is applied below with the cross-fitted calibrator
        signals = routing_signals(store, cached, result, config=config)
        feats.append(dict(result.features))
        extra_codes.append([r.code for r in signals.reasons])
        rows.append((bool(result.results), correct, q.answerable))
        if progress and i % 100 == 0:
            progress(i, len(queries))
    has_results = np.array([h for h, _, _ in rows], bool)
    y = np.array([c for _, c, _ in rows], bool)
    answerable = np.array([a for _, _, a in rows], bool)
    extra = np.array([bool(c) for c in extra_codes]) | ~has_results  # decide(): no results always escalates
    conf, thr = _cross_fit(feats, y.astype(int), folds, seed, target_precision)
    raw = np.array([f.get("dense_top", 0.0) for f in feats])
    raw_thr = _raw_thresholds(raw, y.astype(int), folds, seed, target_precision)
    default = np.array([default_confidence(f) if h else 0.0 for f, h in zip(feats, has_results)])
    api_threshold = store.settings.retrieval.confidence_threshold
    policy = _summary(conf, conf, y, (conf < thr) | extra, answerable, target=target_precision)
    # the raw cosine read as P(correct) is clipped into [0, 1] for its ECE (it can be negative)
    baseline = _summary(raw, np.clip(raw, 0.0, 1.0), y, (raw < raw_thr) | extra, answerable, target=target_precision)
    uncalibrated = _summary(default, default, y, (default < api_threshold) | extra, answerable, target=target_precision)
    by_reason: dict[str, int] = {}
    for codes_ in extra_codes:
        for c in set(codes_):
            by_reason[c] = by_reason.get(c, 0) + 1
    by_reason["low_confidence"] = int((conf < thr).sum())
    documents = len(mapping) if mapping is not None else store.index.ids(store.index.company_table_name, "doc_id").__len__()
    return RoutingEvalReport(
        queries=len(queries), answerable=int(answerable.sum()), policy=policy, baseline=baseline,
        uncalibrated_default=uncalibrated, escalations_by_reason=by_reason,
        settings={"folds": folds, "seed": seed, "target_precision": target_precision, "k": k, "features": list(FEATURES),
                  "mode": store.settings.retrieval.mode, "model": embedder.name, "documents": documents,
                  "policy_threshold_median": round(float(np.median(thr)), 4), "baseline_threshold_median": round(float(np.median(raw_thr)), 4),
                  "uncalibrated_threshold": api_threshold},
    )


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
