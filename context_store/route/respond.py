"""``respond()``: a question in, current cited context and an answer-or-escalate decision out.

The whole use case, in the order it runs:

1. retrieve: current company chunks (or those valid at ``as_of``) and the user's current state;
2. confidence: the calibrator's probability that the context answers the question (or the
   conservative default when no calibrator is fitted);
3. triggers: every registered ``Trigger`` (a callable seam for deployments);
4. outcome signals: repeat contact, a request for a person, sensitive topics, stale sources,
   stale user state (``route.signals``);
5. decide: the one rule, ``route.decision.decide``;
6. route: an escalation becomes a routed question carrying its working memory;
7. trace: the evidence trail of exactly what was served (with the conversation, so outcomes
   can name it);
8. derived outcomes: when the user came back about something the bot answered earlier (the
   repeat-contact trigger), that earlier response gets outcome ``repeat_contact`` and a review
   (``route.outcomes``).

The threshold is the calibrator's own when it has one (``freshcontext calibrate --outcomes``
picks it for a target answer precision), else ``retrieval.confidence_threshold``.

The routed question, the asked-question log, the trace and the derived outcomes commit in one
transaction, so a trace never names a question that was not queued; concurrent requests share
that transaction (``route.recording``: group commit), and each returns only once it has
committed. ``POST /v1/retrieve``, the MCP tool, ``freshcontext query`` and ``freshcontext eval
routing`` all call this function; the evaluation passes ``record=False`` so nothing is routed,
logged or traced.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from context_store.index.embed.protocol import Embedder
from context_store.retrieve.result import RetrievalResult
from context_store.retrieve.retriever import Retriever
from context_store.route.confidence import Calibrator, default_confidence
from context_store.route.decision import Decision, Trigger, decide
from context_store.route.outcomes import RecordedOutcome, record_repeat_contacts
from context_store.route.policy import RoutingConfig, routing_config
from context_store.route.questions import RoutingOutcome
from context_store.route.recording import Writes, group_commit
from context_store.route.signals import routing_signals
from context_store.route.traces import new_trace_id, record_trace
from context_store.route.transcript import MAX_HISTORY_TURNS, check_turns
from context_store.store.context_store import ContextStore

__all__ = ["Question", "Responder", "Response", "respond"]


@dataclass(frozen=True)
class Question:
    """What an agent asks, as the API, MCP and the CLI receive it."""

    query: str
    user_id: str | None = None
    k: int = 5
    as_of: datetime | str | None = None
    filters: dict[str, Any] | None = None
    mode: str | None = None
    conversation_id: str | None = None
    client: str | None = None  # the caller's key name, kept with the trace
    history: Sequence[Mapping[str, Any]] | None = None  # the last turns of the conversation, kept with the trace


@dataclass
class Responder:
    """What answers: one index deployment's retriever, with the policy that decides on its results."""

    store: ContextStore
    retriever: Retriever
    calibrator: Calibrator | None = None
    triggers: Sequence[Trigger] = ()
    routing: RoutingConfig | None = None  # default: the store's ``routing:`` settings

    @property
    def embedder(self) -> Embedder:
        return self.retriever.embedder

    @functools.cached_property
    def policy(self) -> RoutingConfig:
        """``routing``, or the store's ``routing:`` settings (and their environment overrides) read once: a
        responder lives as long as its deployment's settings, and validating them cost ~0.04 ms a request."""
        return self.routing or routing_config(self.store.settings)

    @property
    def threshold(self) -> float:
        """The calibrator's threshold (chosen with it for a target precision) takes precedence over the setting."""
        if self.calibrator is not None and self.calibrator.threshold is not None:
            return self.calibrator.threshold
        return self.store.settings.retrieval.confidence_threshold

    def confidence(self, result: RetrievalResult) -> tuple[float, str]:
        """The served confidence and where it came from (shown with every response)."""
        if not result.results:
            return 0.0, "no results"
        if self.calibrator is not None:
            return self.calibrator.predict(result.features), f"calibrator ({Path(self.calibrator.fitted_on).name or 'unnamed'})"
        return default_confidence(result.features), "conservative default"


@dataclass
class Response:
    """One response: what was retrieved, how sure, what was decided, where it went."""

    result: RetrievalResult
    decision: Decision
    confidence_source: str
    user_state_max_age_hours: float
    trace_id: str | None = None
    routed: RoutingOutcome | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    derived: list[RecordedOutcome] = field(default_factory=list)  # repeat_contact outcomes recorded on earlier answers

    def as_dict(self) -> dict[str, Any]:
        """The response body of ``POST /v1/retrieve`` (and of the MCP tool ``retrieve_context``)."""
        result, decision = self.result, self.decision
        return {
            "trace_id": self.trace_id, "query": result.query, "mode": result.mode, "k": result.k, "as_of": result.as_of,
            "served_at": result.served_at,
            "results": [_hit_dict(h, result.served_at) for h in result.results],
            "user": self._user(),
            "confidence": decision.confidence, "confidence_source": self.confidence_source, "threshold": decision.threshold,
            "decision": decision.decision, "reasons": [r.as_dict() for r in decision.reasons],
            "routed_question": self.routed.as_dict() if self.routed else None,
            "timings_ms": {k: round(v, 3) for k, v in result.timings_ms.items()},
            **self.extra,
        }

    def _user(self) -> dict[str, Any] | None:
        result = self.result
        if result.user_id is None:
            return None
        age = _age(result.served_at, result.user_captured_at)
        max_h = self.user_state_max_age_hours
        return {
            "user_id": result.user_id, "snapshot_version_id": result.user_version_id, "captured_at": result.user_captured_at,
            "age_seconds": age, "max_age_hours": max_h, "stale": age is None or age > max_h * 3600,
            "facts": [{"key": f.key, "text": f.text, "score": f.score} for f in result.user_state],
        }


def _age(now: datetime, then: datetime | None) -> float | None:
    return None if then is None else max(0.0, (now - then).total_seconds())


def _hit_dict(h: Any, now: datetime) -> dict[str, Any]:
    return {
        "text": h.text, "doc_id": h.doc_id, "version_id": h.version_id, "chunk_id": h.chunk_id, "title": h.title,
        "heading": h.heading, "source_path": h.source_path, "kind": h.kind, "score": h.score,
        "vector_score": h.vector_score, "text_score": h.text_score, "source_changed_at": h.source_changed_at,
        "indexed_at": h.indexed_at, "age_seconds": _age(now, h.source_changed_at),
        "current": h.valid_to is None, "valid_from": h.valid_from, "valid_to": h.valid_to,
    }


def respond(responder: Responder, question: Question, *, record: bool = True, now: datetime | None = None) -> Response:
    """Answer or escalate one question; with ``record`` (the default) route, log and trace it."""
    started = time.perf_counter()
    store = responder.store
    history = check_turns(question.history, what="history", max_turns=MAX_HISTORY_TURNS)  # before any work: a caller's mistake
    result = responder.retriever.retrieve(
        question.query, user_id=question.user_id, k=question.k, as_of=question.as_of, filters=question.filters, mode=question.mode
    )
    confidence, source = responder.confidence(result)
    extra = [trigger(result, confidence) for trigger in responder.triggers]
    signals = routing_signals(store, responder.embedder, result, vector=result.query_vector, conversation_id=question.conversation_id,
                              config=responder.policy, now=now)
    decision = decide(result, confidence, responder.threshold, extra_reasons=[*extra, *signals.reasons])
    response = Response(result, decision, source, store.settings.user_state_max_age_hours)
    if not record:
        return response
    trace_id = response.trace_id = new_trace_id()

    def write(writes: Writes) -> RoutingOutcome | None:
        routed = signals.follow_up(
            decision.decision, decision.reasons, confidence=confidence, trace_id=trace_id, transcript=history, session=writes,
        )
        record_trace(
            store, result, decision, confidence_source=source, trace_id=trace_id,
            latency_ms=(time.perf_counter() - started) * 1000, client=question.client,
            conversation_id=question.conversation_id, history=history, session=writes,
        )
        if signals.repeats:  # rare (a user id and a repeat): the ORM's reads and review, in the same transaction
            response.derived = record_repeat_contacts(store, signals.repeats, trace_id=trace_id, now=now, session=writes.session())
        return routed

    # One transaction with the concurrent requests' records; returns once it has committed.
    response.routed = group_commit(store.engine).run(write)
    return response
