"""Outcome signals: the half of a decision a confidence score cannot see, and the log they read.

``routing_signals`` evaluates the triggers of ``route.triggers`` (repeat contact, a request
for a person, sensitive topics, stale sources, stale user state) for one retrieval;
``RoutingSignals.follow_up`` then routes an escalation with its working memory and logs the
question, so a later ask by the same user can be recognised as a repeat contact.
``respond()`` calls both around ``decide()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from sqlmodel import Session

from context_store._common import utcnow
from context_store.index.embed.protocol import Embedder
from context_store.retrieve.result import RetrievalResult
from context_store.route.decision import Reason
from context_store.route.policy import RoutingConfig, routing_config
from context_store.route.questions import RoutingOutcome, route_question
from context_store.route.recording import Writes
from context_store.route.triggers import EarlierAsk, escalation_reasons, record_asked, similar_earlier_asks
from context_store.store.context_store import ContextStore

__all__ = ["RoutingSignals", "routing_signals"]


@dataclass
class RoutingSignals:
    """The outcome-signal half of a decision, and what to do once the decision is made.

    ``respond()`` uses it around ``decide()``::

        signals = routing_signals(store, embedder, result, conversation_id=...)
        decision = decide(result, confidence, threshold, extra_reasons=[*other, *signals.reasons])
        routed = signals.follow_up(decision.decision, decision.reasons, confidence=..., trace_id=...)
    """

    store: ContextStore
    embedder: Embedder
    result: RetrievalResult
    vector: np.ndarray
    reasons: list[Reason]
    conversation_id: str | None = None
    config: RoutingConfig | None = None
    now: datetime | None = None
    active: bool = True
    # the earlier questions a repeat contact repeats (empty unless it fired): their answers failed
    repeats: list[EarlierAsk] = field(default_factory=list)

    def follow_up(
        self, decision: str, reasons: list[Any], *, confidence: float | None = None, trace_id: str | None = None,
        transcript: list[dict[str, Any]] | None = None, session: Session | Writes | None = None,
    ) -> RoutingOutcome | None:
        """Route an escalation (with its working memory, ``transcript`` included) and log the question;
        returns the routed question. With ``session`` both writes join the caller's transaction."""
        if not self.active:
            return None
        routed = None
        if decision == "escalate":
            routed = route_question(
                self.store, self.result, list(reasons), vector=self.vector, model=self.embedder.name, confidence=confidence,
                trace_id=trace_id, conversation_id=self.conversation_id, transcript=transcript, config=self.config, now=self.now,
                session=session,
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
    repeats = []
    if result.user_id and any(r.code == "repeat_contact" for r in reasons):
        # only when the trigger fired (rare): which earlier questions, so their answers can be marked failed
        repeats = similar_earlier_asks(store, embedder.name, result.user_id, vector, config, now or utcnow(), conversation_id)
    return RoutingSignals(store, embedder, result, vector, reasons, conversation_id, config, now, repeats=repeats)
