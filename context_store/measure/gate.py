"""The promotion gate: a new embedding model or chunker only serves once it is measured at least as good.

When the configured (model, chunker) differs from the serving deployment (``pending_change``):

1. ``index.candidate.build_candidate`` builds the new index *beside* the live one (the live
   tables, and everything served from them, are untouched).
2. ``evaluate_gate`` scores live and candidate on the same golden sets, in one run. The
   candidate passes when it holds every current document, clears every floor, and is not
   worse than live by more than ``quality.promotion_tolerance`` on nDCG@10, Recall@k, MRR
   and the answer-changed win rate of any set.
3. ``promote`` switches the serving deployment in one SQL transaction — only for a gate
   that passed on the table version it is switching to. A failed gate records a
   ``rejected`` decision; either way the decision and both sides' numbers are stored
   (``PromotionDecision``). The old tables stay (retired) so a switch back is instant.
   A chunker change re-chunks the current versions' records (``index.candidate.rechunk_current``).

``run_gate`` does all three; ``pending_change``, ``decision_since_promotion`` and
``measured_since_promotion`` tell the schedules and sensors whether there is work to do.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from sqlmodel import col, select

from context_store._common import utcnow
from context_store.errors import StoreError
from context_store.index.candidate import CandidateBuild, build_candidate, candidate_store, held_versions, rechunk_current
from context_store.index.embed.protocol import Embedder
from context_store.measure.checks import CheckOutcome
from context_store.measure.quality import RetrievalQuality, evaluate_retrieval_quality, record_evaluation, retrieval_checks
from context_store.settings import ChunkingConfig
from context_store.store.context_store import ContextStore
from context_store.store.database import bulk_update
from context_store.store.deployments import fingerprint_of
from context_store.store.models import Document, EvaluationRun, IndexDeployment, PromotionDecision, UserRecord

__all__ = [
    "GateResult",
    "decision_since_promotion",
    "evaluate_gate",
    "gate_is_current",
    "last_gate",
    "measured_since_promotion",
    "pending_change",
    "promote",
    "run_gate",
]

log = logging.getLogger(__name__)
COMPARED = ("ndcg@10", "recall@{k}", "mrr@10", "answer_changed_current_wins")
DENSE_SUFFIX = "[vector]"  # the same sets scored in vector mode, compared with live but held to no floor


def pending_change(store: ContextStore) -> str | None:
    """The configured fingerprint when it differs from the serving one, else ``None``."""
    wanted = fingerprint_of(store.configured)
    return wanted if store.deployment is not None and wanted != store.deployment.fingerprint else None


def decision_since_promotion(store: ContextStore, fingerprint: str) -> PromotionDecision | None:
    """The latest decision on candidate ``fingerprint`` taken while the current deployment serves.

    A rejection stays the answer for this configuration until the serving index changes; a
    decision from an earlier serving period (the config flipped back) does not count.
    """
    serving = store.deployment
    with store.session() as session:
        query = select(PromotionDecision).where(PromotionDecision.candidate_fingerprint == fingerprint)
        if serving is not None and serving.promoted_at is not None:
            query = query.where(PromotionDecision.live_fingerprint == serving.fingerprint, col(PromotionDecision.decided_at) >= serving.promoted_at)
        return session.exec(query.order_by(col(PromotionDecision.id).desc()).limit(1)).first()


def measured_since_promotion(store: ContextStore) -> bool:
    """Whether retrieval quality was measured on the serving index since a gate promoted it.

    ``True`` for a deployment no gate promoted (a home's first index is measured after its
    ingest); the gate's own numbers were taken on the candidate before the switch.
    """
    serving = store.deployment
    if serving is None or not store.settings.quality.golden_sets:
        return True  # nothing to measure it on
    with store.session() as session:
        promoted = session.exec(select(PromotionDecision.id).where(
            PromotionDecision.decision == "promoted", PromotionDecision.candidate_fingerprint == serving.fingerprint).limit(1)).first()
        if promoted is None:
            return True
        query = select(EvaluationRun.id).where(EvaluationRun.kind == "retrieval", EvaluationRun.index_fingerprint == serving.fingerprint)
        if serving.promoted_at is not None:
            query = query.where(col(EvaluationRun.created_at) >= serving.promoted_at)
        return session.exec(query.limit(1)).first() is not None


@dataclass
class GateResult:
    live_fingerprint: str
    candidate_fingerprint: str
    passed: bool
    reason: str
    live_metrics: dict[str, dict[str, float]]  # set name -> metrics
    candidate_metrics: dict[str, dict[str, float]]
    candidate_table_version: int | None = None
    checks: list[CheckOutcome] = field(default_factory=list)
    live_table_version: int | None = None
    gate_id: str = ""
    candidate: RetrievalQuality | None = None

    def comparison(self) -> list[dict[str, Any]]:
        out = []
        for name, metrics in self.candidate_metrics.items():
            for metric, value in metrics.items():
                if metric in self.live_metrics.get(name, {}) and not metric.startswith(("ms_", "queries", "unanswerable")):
                    out.append({"set": name, "metric": metric, "live": self.live_metrics[name][metric], "candidate": value})
        return out


def last_gate(store: ContextStore) -> GateResult | None:
    """The latest gate evaluation of the configured candidate, rebuilt from the evaluation history."""
    fp = fingerprint_of(store.configured)
    with store.session() as session:
        latest = session.exec(
            select(EvaluationRun).where(EvaluationRun.kind == "gate", EvaluationRun.index_fingerprint == fp)
            .order_by(col(EvaluationRun.id).desc()).limit(1)
        ).first()
        if latest is None or not latest.details:
            return None
        gate_id = latest.details.get("gate_id", "")
        rows = [r for r in session.exec(
            select(EvaluationRun).where(EvaluationRun.kind == "gate", EvaluationRun.index_fingerprint == fp)
            .order_by(col(EvaluationRun.id).desc()).limit(200)
        ).all() if (r.details or {}).get("gate_id") == gate_id]
    return GateResult(
        live_fingerprint=latest.details.get("live_fingerprint", ""), candidate_fingerprint=fp, passed=bool(latest.passed),
        live_table_version=latest.details.get("live_table_version"),
        reason=latest.details.get("reason", ""), live_metrics={r.set_name: r.details.get("live") or {} for r in rows},  # type: ignore[union-attr]
        candidate_metrics={r.set_name: dict(r.metrics) for r in rows}, candidate_table_version=latest.table_version, gate_id=gate_id,
    )


def _missing_documents(store: ContextStore, cand: ContextStore) -> int:
    with store.session() as session:
        current = dict(session.exec(select(Document.doc_id, Document.current_version_id).where(col(Document.current_version_id).is_not(None))).all())
    held = held_versions(cand.index, cand.index.company_table_name, "doc_id")
    return sum(1 for d, v in current.items() if held.get(d) != v)


def gate_is_current(store: ContextStore, cand: ContextStore) -> GateResult | None:
    """The last gate of this candidate when neither table changed since (and the golden sets did not): no need to evaluate again."""
    gate = last_gate(store)
    if gate is None or gate.candidate_table_version is None or gate.live_table_version is None:
        return None
    same_tables = (gate.candidate_table_version == cand.index.versions().get(cand.index.company_table_name)
                   and gate.live_table_version == store.index.versions().get(store.index.company_table_name))
    evaluated = {name.removesuffix(DENSE_SUFFIX) for name in gate.candidate_metrics}
    same_sets = evaluated == {gs.name for gs in store.settings.quality.golden_sets}
    return gate if same_tables and same_sets else None


def evaluate_gate(
    store: ContextStore, live_embedder: Embedder, candidate_embedder: Embedder, cand: ContextStore, *, trigger: str = "cli",
) -> GateResult:
    """Score live and candidate on the same sets; record the candidate's numbers and, on failure, the rejection."""
    config = store.settings.quality
    live = evaluate_retrieval_quality(store, live_embedder)
    candidate = evaluate_retrieval_quality(cand, candidate_embedder)
    checks = retrieval_checks(candidate, config)  # floors: the mode that serves
    # A model change alters the dense ranker: compare it there too (no floors), where the default's full-text
    # evidence cannot hide a broken model (each set once more, suffixed DENSE_SUFFIX).
    for side, report, embedder in ((store, live, live_embedder), (cand, candidate, candidate_embedder)):
        dense = evaluate_retrieval_quality(side, embedder, mode="vector")
        report.sets += [replace(s, name=f"{s.name}{DENSE_SUFFIX}") for s in dense.sets]
    missing = _missing_documents(store, cand)
    checks.append(CheckOutcome("candidate holds every current document", missing == 0, f"{missing} current documents missing or outdated", missing, 0))
    live_sets = {s.name: s.metrics for s in live.sets}
    for s in candidate.sets:
        for metric in COMPARED:
            metric = metric.format(k=config.k)
            if metric in s.metrics and metric in live_sets.get(s.name, {}):
                base = live_sets[s.name][metric]
                checks.append(CheckOutcome(
                    f"{s.name}: {metric} not worse than live", s.metrics[metric] >= base - config.promotion_tolerance - 1e-9,
                    f"candidate {s.metrics[metric]:.3f} vs live {base:.3f} (tolerance {config.promotion_tolerance:.3f})",
                    s.metrics[metric], base - config.promotion_tolerance,
                ))
    failed = sorted((c for c in checks if not c.passed), key=lambda c: not c.name.startswith("candidate holds"))
    passed = not failed
    reason = "at least as good as live on every set" if passed else "; ".join(c.detail if c.name.startswith("candidate holds") else f"{c.name}: {c.detail}" for c in failed[:4])
    result = GateResult(
        store.settings.index_code_version(), candidate.fingerprint, passed, reason, _metrics_by_set(live), _metrics_by_set(candidate),
        cand.index.versions().get(cand.index.company_table_name), checks, gate_id=uuid.uuid4().hex, candidate=candidate,
        live_table_version=live.table_version,
    )
    for s in candidate.sets:
        record_evaluation(cand, kind="gate", set_name=s.name, metrics=s.metrics, passed=passed, trigger=trigger,
                          details={"gate_id": result.gate_id, "live": live_sets.get(s.name), "live_fingerprint": result.live_fingerprint,
                                   "live_table_version": live.table_version,
                                   "reason": reason, "worst": s.worst, "error": s.error},
                          fingerprint=candidate.fingerprint, model=candidate.model, table_version=result.candidate_table_version)
    if not passed:
        _decide(store, result, "rejected", trigger)
    return result


def _metrics_by_set(report: RetrievalQuality) -> dict[str, dict[str, float]]:
    return {s.name: s.metrics for s in report.sets}


def _decide(store: ContextStore, gate: GateResult, decision: str, trigger: str) -> None:
    with store.session() as session:
        session.add(PromotionDecision(
            live_fingerprint=gate.live_fingerprint, candidate_fingerprint=gate.candidate_fingerprint, decision=decision,
            reason=gate.reason, live_metrics=gate.live_metrics, candidate_metrics=gate.candidate_metrics, trigger=trigger,
        ))
        row = session.get(IndexDeployment, gate.candidate_fingerprint)
        if row is not None and decision == "rejected" and row.status == "candidate":
            row.status = "rejected"
            session.add(row)


def promote(store: ContextStore, gate: GateResult, *, trigger: str = "cli") -> PromotionDecision:
    """Switch serving to the candidate the gate passed; refuses a failed gate or a candidate changed since."""
    if not gate.passed:
        raise StoreError(f"candidate {gate.candidate_fingerprint} did not pass the gate: {gate.reason}")
    cand = candidate_store(store)
    now_version = cand.index.versions().get(cand.index.company_table_name)
    if now_version != gate.candidate_table_version:
        raise StoreError(f"candidate table changed since it was evaluated (version {gate.candidate_table_version} → {now_version}); evaluate again")
    old = store.deployment
    with store.session() as session:
        new = session.get(IndexDeployment, gate.candidate_fingerprint)
        if new is None or old is None:
            raise StoreError("no candidate deployment recorded; build it first")
        old_row = session.get(IndexDeployment, old.fingerprint)
        rechunked = 0
        if ChunkingConfig(**new.chunking) != ChunkingConfig(**old.chunking):
            rechunked = rechunk_current(session, old.fingerprint, ChunkingConfig(**new.chunking))
        held = held_versions(cand.index, cand.index.company_table_name, "doc_id")
        bulk_update(session, Document, "doc_id", [{"doc_id": d, "indexed_version_id": v} for d, v in held.items()])
        held_users = held_versions(cand.index, cand.index.user_table_name, "user_id")
        bulk_update(session, UserRecord, "user_id", [{"user_id": u, "indexed_version_id": v} for u, v in held_users.items()])
        if old_row is not None:
            old_row.status, old_row.retired_at = "retired", utcnow()
            session.add(old_row)
            session.flush()  # one serving row at a time
        new.status, new.promoted_at = "serving", utcnow()
        session.add(new)
        decision = PromotionDecision(
            live_fingerprint=gate.live_fingerprint, candidate_fingerprint=gate.candidate_fingerprint, decision="promoted",
            reason=gate.reason + (f"; {rechunked} current versions re-chunked (old chunks archived)" if rechunked else ""),
            live_metrics=gate.live_metrics, candidate_metrics=gate.candidate_metrics, trigger=trigger,
        )
        session.add(decision)
    log.info("promoted index %s (model %s) over %s", new.fingerprint, new.model, old.fingerprint)
    return decision


def run_gate(
    store: ContextStore, live_embedder: Embedder, candidate_embedder: Embedder, *, trigger: str = "cli", dry_run: bool = False,
) -> tuple[CandidateBuild | None, GateResult | None, PromotionDecision | None]:
    """Build, evaluate and (when it passes, unless ``dry_run``) promote; ``(None, None, None)`` when nothing changed."""
    if pending_change(store) is None:
        return None, None, None
    build = build_candidate(store, candidate_embedder)
    gate = evaluate_gate(store, live_embedder, candidate_embedder, build.store, trigger=trigger)
    if not gate.passed or dry_run:
        return build, gate, None
    return build, gate, promote(store, gate, trigger=trigger)
