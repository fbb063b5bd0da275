"""An escalation, end to end: outcome signals + confidence -> decision -> routed question -> log.

``assess`` is what the retrieval API (``POST /v1/retrieve``) and ``freshcontext eval
routing`` both call, so the evaluation measures exactly the policy that serves.

The confidence half of the decision belongs to ``context_store.route.decision`` (issue 4). Until
that module exists on this branch, ``assess`` applies the same rule locally (escalate when
``confidence < threshold`` or any other reason fired) and reports it as ``low_confidence``;
when it exists, ``assess`` delegates to ``decide(result, confidence, threshold,
extra_reasons=...)`` so there is one rule in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlmodel import Session

from context_store.index.embed.protocol import Embedder
from context_store.retrieve.result import RetrievalResult
from context_store.route.questions import RoutingOutcome, route_question
from context_store.route.triggers import EscalationReason, RoutingConfig, escalation_reasons, record_asked, routing_config
from context_store.store.context_store import ContextStore

__all__ = ["RoutingSignals", "Verdict", "assess", "local_decide", "routing_signals"]


@dataclass
class Verdict:
    decision: str  # answer | escalate
    reasons: list[EscalationReason] = field(default_factory=list)
    confidence: float | None = None
    threshold: float | None = None
    routed: RoutingOutcome | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reasons": [r.as_dict() for r in self.reasons],
            "confidence": self.confidence,
            "threshold": self.threshold,
            "routed_question": self.routed.as_dict() if self.routed else None,
        }


def local_decide(
    result: RetrievalResult, confidence: float, threshold: float, *, extra_reasons: tuple[EscalationReason, ...] | list[EscalationReason] = ()
) -> tuple[str, list[EscalationReason]]:
    """The confidence rule, as ``context_store.route.decision.decide`` states it: low confidence or any extra reason escalates."""
    reasons: list[EscalationReason] = []
    if not result.results:
        reasons.append(EscalationReason("no_results", "no current document matched the question", source="retrieval"))
    if confidence < threshold:
        reasons.append(EscalationReason(
            "low_confidence", f"confidence {confidence:.3f} is below the threshold {threshold:.3f}", round(confidence, 4), source="retrieval",
        ))
    reasons.extend(extra_reasons)
    return ("escalate" if reasons else "answer"), reasons


@dataclass
class RoutingSignals:
    """The outcome-signal half of a decision, and what to do once the decision is made.

    The retrieval API uses it around ``context_store.route.decision.decide``::

        signals = routing_signals(store, embedder, result, conversation_id=...)
        decision = decide(result, confidence, threshold, extra_reasons=[*other, *signals.reasons])
        routed = signals.follow_up(decision.decision, decision.reasons, confidence=..., trace_id=...)
    """

    store: ContextStore
    embedder: Embedder
    result: RetrievalResult
    vector: np.ndarray
    reasons: list[EscalationReason]
    conversation_id: str | None = None
    config: RoutingConfig | None = None
    now: datetime | None = None
    active: bool = True

    def follow_up(
        self, decision: str, reasons: list[Any], *, confidence: float | None = None, trace_id: str | None = None, session: Session | None = None,
    ) -> RoutingOutcome | None:
        """Route an escalation (with its working memory) and log the question; returns the routed question.
        With ``session`` both writes join the caller's transaction."""
        if not self.active:
            return None
        routed = None
        if decision == "escalate":
            routed = route_question(
                self.store, self.result, list(reasons), vector=self.vector, model=self.embedder.name, confidence=confidence,
                trace_id=trace_id, conversation_id=self.conversation_id, config=self.config, now=self.now, session=session,
            )
        record_asked(
            self.store, self.result, vector=self.vector, model=self.embedder.name, decision=decision, confidence=confidence,
            reasons=list(reasons), question_id=routed.question_id if routed else None, trace_id=trace_id,
            conversation_id=self.conversation_id, now=self.now, session=session,
        )
        return routed


def routing_signals(
    store: ContextStore,
    embedder: Embedder,
    result: RetrievalResult,
    *,
    vector: np.ndarray | None = None,
    conversation_id: str | None = None,
    config: RoutingConfig | None = None,
    now: datetime | None = None,
) -> RoutingSignals:
    """Evaluate the outcome signals for one retrieval. Point-in-time (``as_of``) audits are neither routed nor logged."""
    config = config or routing_config(store.settings)
    if getattr(result, "as_of", None) is not None:
        return RoutingSignals(store, embedder, result, np.zeros(0, np.float32), [], conversation_id, config, now, active=False)
    vector = embedder.encode([result.query])[0] if vector is None else np.asarray(vector, dtype=np.float32)
    reasons = escalation_reasons(store, embedder, result, query_vector=vector, config=config, now=now, conversation_id=conversation_id)
    return RoutingSignals(store, embedder, result, vector, reasons, conversation_id, config, now)


def assess(
    store: ContextStore,
    embedder: Embedder,
    result: RetrievalResult,
    *,
    confidence: float,
    threshold: float,
    vector: np.ndarray | None = None,
    trace_id: str | None = None,
    conversation_id: str | None = None,
    route: bool = True,
    record: bool = True,
    decide: Callable[..., Any] | None = None,
    config: RoutingConfig | None = None,
    now: datetime | None = None,
) -> Verdict:
    """Decide answer or escalate for one retrieval; on escalation, route it with its working memory.

    ``route=False, record=False`` evaluates without side effects (the offline evaluation
    and replays use that).
    """
    config = config or routing_config(store.settings)
    vector = embedder.encode([result.query])[0] if vector is None else np.asarray(vector, dtype=np.float32)
    extra = escalation_reasons(store, embedder, result, query_vector=vector, config=config, now=now, conversation_id=conversation_id)
    outcome = (decide or local_decide)(result, confidence, threshold, extra_reasons=tuple(extra))
    # ``context_store.route.decision.decide`` returns a Decision object; ``local_decide`` a tuple.
    decision, reasons = outcome if isinstance(outcome, tuple) else (outcome.decision, outcome.reasons)
    verdict = Verdict(decision=decision, reasons=list(reasons), confidence=confidence, threshold=threshold)
    if decision == "escalate" and route:
        verdict.routed = route_question(
            store, result, verdict.reasons, vector=vector, model=embedder.name,
            confidence=confidence, trace_id=trace_id, conversation_id=conversation_id, config=config, now=now,
        )
    if record:
        record_asked(
            store, result, vector=vector, model=embedder.name, decision=decision, confidence=confidence,
            reasons=verdict.reasons,
            question_id=verdict.routed.question_id if verdict.routed else None,
            trace_id=trace_id, conversation_id=conversation_id, now=now,
        )
    return verdict
