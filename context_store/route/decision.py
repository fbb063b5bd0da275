"""Answer or escalate: the one place that turns a retrieval and its confidence into a decision.

``decide`` escalates when any reason applies. This module raises two reasons itself:

* ``low_confidence``: the calibrated confidence is below the configured threshold;
* ``no_results``: nothing current matched (an empty context is never an answer).

Other escalation triggers (repeat contact, sensitive topic, an explicit request for a
person, stale source, stale user state, ...) live in ``route.triggers`` and are passed in as
``extra_reasons``. ``respond()`` also evaluates every registered ``Trigger`` (a callable
taking the retrieval result and the confidence, returning a ``Reason`` or ``None``) and
passes what they return, so a new trigger needs no change here. Codes are short, stable, snake_case
strings; ``detail`` says what a person reading the trace needs to know.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

__all__ = ["ANSWER", "ESCALATE", "LOW_CONFIDENCE", "NO_RESULTS", "REASON_CODES", "Decision", "Reason", "Trigger", "decide"]

ANSWER = "answer"
ESCALATE = "escalate"
LOW_CONFIDENCE = "low_confidence"
NO_RESULTS = "no_results"
# Every code a reason can carry, so each lives in one place (the routing triggers raise the rest).
REASON_CODES = (
    NO_RESULTS,
    LOW_CONFIDENCE,
    "repeat_contact",
    "human_requested",
    "sensitive_topic",
    "stale_source",
    "stale_user_state",
    "handoff_requested",  # the agent pressed the red button (route.handoff); never raised by decide()
    "answer_failed",  # a review: an answer's outcome said it failed (route.reviews)
)


@dataclass(frozen=True)
class Reason:
    """Why a question goes to a person: the one reason type of the API, the trace and the routed question."""

    code: str
    detail: str
    score: float | None = None  # the confidence, similarity or age that fired it
    source: str = "retrieval"  # which component raised it (retrieval, routing, ...)

    def as_dict(self) -> dict[str, Any]:
        # by hand: dataclasses.asdict deep-copies field by field, and this runs several times a response
        return {"code": self.code, "detail": self.detail, "score": self.score, "source": self.source}


@dataclass
class Decision:
    decision: Literal["answer", "escalate"]
    reasons: list[Reason] = field(default_factory=list)
    confidence: float = 0.0
    threshold: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"decision": self.decision, "reasons": [r.as_dict() for r in self.reasons],
                "confidence": self.confidence, "threshold": self.threshold}


class Trigger(Protocol):
    """An escalation trigger: returns a ``Reason`` when it fires, else ``None``."""

    def __call__(self, result: Any, confidence: float) -> Reason | None: ...


def decide(result: Any, confidence: float, threshold: float, *, extra_reasons: Iterable[Reason | None] = ()) -> Decision:
    """``escalate`` with every reason that applies, else ``answer``.

    ``result`` is a ``RetrievalResult`` (anything with a ``results`` list works).
    """
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be in [0, 1], got {threshold}")
    reasons: list[Reason] = []
    if not getattr(result, "results", None):
        reasons.append(Reason(NO_RESULTS, "no current document matched the question"))
    if confidence < threshold:
        reasons.append(Reason(LOW_CONFIDENCE, f"confidence {confidence:.3f} is below the threshold {threshold:.3f}", round(confidence, 4)))
    reasons.extend(r for r in extra_reasons if r is not None)
    return Decision(ESCALATE if reasons else ANSWER, reasons, confidence=confidence, threshold=threshold)
