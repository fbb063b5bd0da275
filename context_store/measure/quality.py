"""Retrieval quality on the configured golden sets, its checks, and the history they are judged against.

Every evaluation is stored as an ``EvaluationRun`` row (kind, set, index fingerprint, table
version, metrics, pass/fail, the worst queries), so "quality over time" is a query, the
report can plot it, and a check can compare today's number with the *last good run* —
a slow slide below the floor is caught as a drop from the last good value first.

Golden sets come in two formats (``settings.quality.golden_sets``):

* ``golden``: questions about this home's own documents (``questions.load_questions``),
  evaluated against the index that serves;
* ``beir``: a BEIR folder with its own corpus, ingested by the ordinary pipeline into a
  side home per (model, chunker) under ``<home>/quality/beir`` and scored with
  ``evaluation.evaluate_retrieval``; it measures the retrieval configuration on a public
  set, and re-runs reuse the side home's embeddings.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import insert
from sqlmodel import col, select

from context_store._common import utcnow
from context_store.index.embed.protocol import Embedder
from context_store.index.ingest import ingest
from context_store.measure.beir import load_beir, write_corpus
from context_store.measure.checks import CheckOutcome
from context_store.measure.golden import GoldenResult, evaluate_golden
from context_store.measure.questions import load_questions
from context_store.measure.retrieval_eval import evaluate_retrieval
from context_store.retrieve.dense_index import DenseIndex
from context_store.retrieve.retriever import Retriever
from context_store.settings import GoldenSetConfig, QualityConfig, Settings
from context_store.store.context_store import ContextStore
from context_store.store.models import EvaluationRun

__all__ = [
    "RetrievalQuality",
    "SetQuality",
    "evaluate_retrieval_quality",
    "golden_sets",
    "history",
    "last_good",
    "record_evaluation",
    "retrieval_checks",
]

log = logging.getLogger(__name__)


def golden_sets(settings: Settings) -> list[GoldenSetConfig]:
    """The configured sets with paths resolved against the home."""
    out = []
    for gs in settings.quality.golden_sets:
        path = gs.path if gs.path.is_absolute() else (settings.home / gs.path).resolve()
        out.append(gs.model_copy(update={"path": path}))
    return out


@dataclass
class SetQuality:
    name: str
    format: str
    metrics: dict[str, float]
    worst: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # the set could not be evaluated (missing file, bad line): a failed check, not a crash


@dataclass
class RetrievalQuality:
    fingerprint: str
    model: str
    table_version: int | None
    sets: list[SetQuality]
    evaluated_at: datetime = field(default_factory=utcnow)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _worst_rows(result: GoldenResult, n: int) -> list[dict[str, Any]]:
    return [
        {"id": o.id, "question": o.text, "expected": o.expected, "returned": o.returned[:3], "ndcg@10": round(o.ndcg, 3),
         "rank_of_first_expected": next((i + 1 for i, d in enumerate(o.returned) if d in o.expected), None),
         "stale_served": o.stale_served}
        for o in result.worst(n)
    ]


def _beir_side_store(store: ContextStore, gs: GoldenSetConfig) -> tuple[ContextStore, Any]:
    dataset = load_beir(gs.path)
    if gs.max_queries:
        keep = list(dataset.judged_queries())[: gs.max_queries]
        dataset.queries = {q: dataset.queries[q] for q in keep}
    fp = store.settings.index_code_version()
    side = store.settings.home / "quality" / "beir" / f"{gs.name}-{fp}"
    corpus = side / "sources" / "beir"
    if not corpus.is_dir():
        write_corpus(dataset, corpus)
    side_settings = Settings.load(
        side, company_sources=[{"name": "beir", "path": str(corpus)}],
        embedding=store.settings.embedding.model_dump(), chunking=store.settings.chunking.model_dump(),
        retrieval=store.settings.retrieval.model_dump(exclude_none=True),
    )
    return ContextStore(side_settings), dataset


def evaluate_retrieval_quality(
    store: ContextStore, embedder: Embedder, *, sets: list[GoldenSetConfig] | None = None, mode: str | None = None,
) -> RetrievalQuality:
    """Evaluate ``store``'s serving index on every configured set (the promotion gate passes a candidate's store)."""
    config = store.settings.quality
    report = RetrievalQuality(
        fingerprint=store.settings.index_code_version(), model=embedder.name,
        table_version=store.index.versions().get(store.index.company_table_name), sets=[],
    )
    for gs in sets if sets is not None else golden_sets(store.settings):
        try:
            if gs.format == "golden":
                retriever = Retriever(store, embedder, dense=DenseIndex.from_config(store.index, store.settings.retrieval, ann="exact", refresh_interval=3600))
                result = evaluate_golden(retriever, load_questions(gs.path), set_name=gs.name, k=config.k, mode=mode)
                report.sets.append(SetQuality(gs.name, gs.format, result.metrics, _worst_rows(result, config.worst_queries)))
            else:
                side, dataset = _beir_side_store(store, gs)
                ingest(side, embedder)
                retriever = Retriever(side, embedder, dense=DenseIndex.from_config(side.index, side.settings.retrieval, ann="exact", refresh_interval=3600))
                chosen = mode or side.settings.retrieval.mode
                row = evaluate_retrieval(retriever, dataset, k=config.k, modes=[chosen], default_mode=chosen)
                metrics = {key: float(v) for key, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
                report.sets.append(SetQuality(gs.name, gs.format, metrics))
        except Exception as exc:  # one unusable set must not hide the others' numbers
            log.exception("golden set %s could not be evaluated", gs.name)
            report.sets.append(SetQuality(gs.name, gs.format, {}, error=f"{type(exc).__name__}: {exc}"))
    return report


# --- checks ---------------------------------------------------------------------------------


_FLOORS = (("ndcg@10", "ndcg_floor"), ("recall@{k}", "recall_floor"), ("mrr@10", "mrr_floor"),
           ("answer_changed_current_wins", "answer_changed_floor"))


def retrieval_checks(report: RetrievalQuality, config: QualityConfig, baseline: dict[str, dict[str, float]] | None = None) -> list[CheckOutcome]:
    """Per set: every metric at or above its floor, and nDCG@10 no more than ``tolerance`` below ``baseline`` (last good run)."""
    outcomes: list[CheckOutcome] = []
    baseline = baseline or {}
    if not report.sets:
        return [CheckOutcome("retrieval_quality_above_floor", False, "no golden set is configured (settings: quality.golden_sets)")]
    for s in report.sets:
        if s.error:
            outcomes.append(CheckOutcome(f"{s.name}: evaluated", False, s.error))
            continue
        for metric, key in _FLOORS:
            metric = metric.format(k=config.k)
            if metric not in s.metrics:
                continue
            value, floor = s.metrics[metric], getattr(config, key)
            outcomes.append(CheckOutcome(f"{s.name}: {metric} >= floor", value >= floor,
                                         f"{s.name} {metric} {value:.3f} (floor {floor:.3f})", value, floor))
        last = baseline.get(s.name, {}).get("ndcg@10")
        if last is not None and "ndcg@10" in s.metrics:
            value, limit = s.metrics["ndcg@10"], last - config.tolerance
            outcomes.append(CheckOutcome(f"{s.name}: ndcg@10 within tolerance of last good", value >= limit - 1e-9,
                                         f"{s.name} nDCG@10 {value:.3f}, last good run {last:.3f}, tolerance {config.tolerance:.3f}", value, limit))
    return outcomes


# --- history --------------------------------------------------------------------------------


def record_evaluation(
    store: ContextStore, *, kind: str, set_name: str, metrics: dict[str, Any], passed: bool | None,
    details: dict[str, Any] | None = None, trigger: str = "cli", fingerprint: str | None = None,
    model: str | None = None, table_version: int | None = None,
) -> None:
    row = {
        "kind": kind, "set_name": set_name, "created_at": utcnow(),
        "index_fingerprint": fingerprint or store.settings.index_code_version(),
        "model": model or store.settings.embedding.model, "table_version": table_version, "passed": passed, "trigger": trigger,
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        "details": details,
    }
    with store.engine.begin() as conn:
        conn.execute(insert(EvaluationRun.__table__), [row])  # type: ignore[attr-defined]


def last_good(store: ContextStore, kind: str, set_name: str, *, fingerprint: str | None = None) -> dict[str, float] | None:
    """Metrics of the latest passing run of this set (on this index fingerprint when given)."""
    with store.session() as session:
        query = select(EvaluationRun).where(EvaluationRun.kind == kind, EvaluationRun.set_name == set_name, EvaluationRun.passed == True)  # noqa: E712
        if fingerprint is not None:
            query = query.where(EvaluationRun.index_fingerprint == fingerprint)
        row = session.exec(query.order_by(col(EvaluationRun.id).desc()).limit(1)).first()
    return dict(row.metrics) if row is not None else None


def history(store: ContextStore, kind: str | None = None, *, since: datetime | None = None, limit: int = 10_000) -> list[EvaluationRun]:
    """Evaluation runs, oldest first."""
    with store.session() as session:
        query = select(EvaluationRun)
        if kind is not None:
            query = query.where(EvaluationRun.kind == kind)
        if since is not None:
            query = query.where(col(EvaluationRun.created_at) >= since)
        rows = session.exec(query.order_by(col(EvaluationRun.id).desc()).limit(limit)).all()
    return list(reversed(rows))


def store_retrieval_quality(store: ContextStore, report: RetrievalQuality, outcomes: list[CheckOutcome], *, trigger: str = "cli") -> None:
    """One history row per set; a set passes when every one of its checks passed."""
    for s in report.sets:
        mine = [o for o in outcomes if o.name.startswith(f"{s.name}:")]
        record_evaluation(
            store, kind="retrieval", set_name=s.name, metrics=s.metrics, passed=bool(mine) and all(o.passed for o in mine),
            details={"worst": s.worst, "error": s.error, "format": s.format}, trigger=trigger,
            fingerprint=report.fingerprint, model=report.model, table_version=report.table_version,
        )


def baselines(store: ContextStore, report: RetrievalQuality) -> dict[str, dict[str, float]]:
    """Last good metrics per set, on the same index fingerprint (a promoted index starts its own history)."""
    out = {}
    for s in report.sets:
        found = last_good(store, "retrieval", s.name, fingerprint=report.fingerprint)
        if found is not None:
            out[s.name] = found
    return out


__all__ += ["baselines", "store_retrieval_quality"]


# --- routing and learning -------------------------------------------------------------------


ROUTING_KEYS = ("escalation_precision", "escalation_recall", "coverage_at_target", "coverage_at_90", "coverage_at_95",
                "aurc", "ece", "escalation_rate", "answer_precision")


def evaluate_routing_quality(store: ContextStore, embedder: Embedder) -> list[SetQuality]:
    """Routing (answer or escalate) on every ``golden``-format set, as ``routing_eval`` scores it, on the serving index."""
    from context_store.measure.routing_eval import evaluate_routing
    from context_store.route.policy import routing_config

    config = store.settings.quality
    out: list[SetQuality] = []
    for gs in golden_sets(store.settings):
        if gs.format != "golden":
            continue  # a BEIR set has no unanswerable questions to route
        try:
            report = evaluate_routing(store, embedder, load_questions(gs.path, answerable_need_docs=False), target_precision=config.routing_target_precision,
                                      k=config.k, config=routing_config(store.settings))
            data = report.as_dict()
            metrics = {key: float(data[key]) for key in ROUTING_KEYS if key in data}
            for side in ("baseline", "served"):  # the raw-score baseline, and the confidence the API serves today
                metrics.update({f"{side}_{key}": float(data[side][key]) for key in ("ece", "coverage_at_target", "escalation_recall", "escalation_rate")
                                if key in data[side]})
            metrics.update({"queries": float(report.queries), "answerable": float(report.answerable)})
            out.append(SetQuality(gs.name, gs.format, metrics, worst=[{"escalations_by_reason": report.escalations_by_reason}]))
        except Exception as exc:  # one unusable set must not hide the others' numbers
            log.exception("golden set %s could not be evaluated for routing", gs.name)
            out.append(SetQuality(gs.name, gs.format, {}, error=f"{type(exc).__name__}: {exc}"))
    return out


def routing_checks(sets: list[SetQuality], config: QualityConfig, *, outcome_gap: tuple[float | None, int, int] | None = None) -> list[CheckOutcome]:
    """Calibration error of the confidence the API serves under its ceiling: per golden set (through ``respond()``),
    and on outcomes when there are enough (``outcome_gap``: the scorecard's ECE, its answers, the answers needed).
    The cross-fitted ECE is shown beside the served one, not judged: it describes a model nobody serves."""
    ceiling = config.routing_ece_ceiling
    if not sets:
        return [CheckOutcome("routing_ece_under_ceiling", False, "no golden-format set is configured (settings: quality.golden_sets)")]
    out = []
    for s in sets:
        if s.error:
            out.append(CheckOutcome(f"{s.name}: evaluated", False, s.error))
            continue
        served, crossfit = s.metrics.get("served_ece"), s.metrics.get("ece")
        out.append(CheckOutcome(
            f"{s.name}: served ece <= ceiling", served is not None and served <= ceiling,
            f"{s.name}: ECE of the served confidence {_or_dash(served)} (cross-fitted calibrator {_or_dash(crossfit)}; ceiling {ceiling:.3f})",
            served, ceiling))
    if outcome_gap is not None:
        gap, n, needed = outcome_gap
        if gap is not None and n >= needed:
            out.append(CheckOutcome("outcomes: served ece <= ceiling", gap <= ceiling,
                                    f"ECE of the served confidence on {n} answers with outcomes {gap:.3f} (ceiling {ceiling:.3f})", gap, ceiling))
    return out


def _or_dash(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def learning_checks(store: ContextStore, metrics: dict[str, Any], config: QualityConfig, *, now: datetime | None = None) -> list[CheckOutcome]:
    """Time to knowledge p95 under its ceiling; no stored answer waiting longer than that to become retrievable."""
    from context_store.store.models import StaffAnswer

    now = now or utcnow()
    ceiling = config.time_to_knowledge_p95_ceiling_s
    p95 = metrics.get("time_to_knowledge_p95_s")
    with store.session() as session:
        waiting = session.exec(
            select(StaffAnswer.answer_id).where(col(StaffAnswer.retrievable_at).is_(None),
                                                col(StaffAnswer.received_at) < now - timedelta(seconds=ceiling))
        ).all()
    return [
        CheckOutcome("time_to_knowledge_p95", p95 is None or p95 <= ceiling,
                     "no staff answer has become retrievable yet" if p95 is None else f"p95 {p95:.1f} s (ceiling {ceiling:g} s)", p95, ceiling),
        CheckOutcome("answers_become_retrievable", not waiting,
                     f"{len(waiting)} staff answers stored more than {ceiling:g} s ago are still not retrievable", len(waiting), 0),
    ]


__all__ += ["ROUTING_KEYS", "evaluate_routing_quality", "learning_checks", "routing_checks"]
