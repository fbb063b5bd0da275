"""Step 6 of the data flow: what to do with a question once its context is retrieved.

``respond()`` is the whole use case (retrieve, confidence, triggers, outcome signals,
``decide()``, route, trace) that the API, MCP, the CLI and the evaluations call. The rest
is its parts: the calibrated confidence, the one decision rule and its reason type, the
escalation triggers, routed questions with their working memory, evidence traces, outcomes
(what happened after a response) and the reviews a failed answer opens, the outbox of
notifications and signed webhooks. ``request_handoff()`` is the other way in: the red button,
a person at once with the whole conversation (``route.transcript`` bounds it).
"""

from context_store.route.confidence import (
    CALIBRATOR_FILE,
    FEATURES,
    Calibrator,
    default_confidence,
    fit_calibrator,
    load_calibrator,
)
from context_store.route.decision import ANSWER, ESCALATE, REASON_CODES, Decision, Reason, Trigger, decide
from context_store.route.handoff import HANDOFF, HANDOFF_REQUESTED, HandoffOutcome, request_handoff
from context_store.route.outbox import OutboxWorker, deliver_due, outbox_counts, redeliver
from context_store.route.outcomes import (
    DERIVED_OUTCOMES,
    OUTCOMES,
    THUMBS,
    OutcomeReport,
    RecordedOutcome,
    list_outcomes,
    outcomes_for_trace,
    record_outcome,
    succeeded,
)
from context_store.route.policy import RoutingConfig, SensitiveTopic, routing_config
from context_store.route.questions import (
    KINDS,
    STATUSES,
    RoutingOutcome,
    WorkingMemory,
    assign_question,
    get_question,
    list_questions,
    route_question,
    set_status,
)
from context_store.route.respond import Question, Responder, Response, respond
from context_store.route.reviews import FAILED_OUTCOMES, failure_of, since_text
from context_store.route.signals import RoutingSignals, routing_signals
from context_store.route.traces import get_trace, record_trace, replay, trace_dict
from context_store.route.transcript import (
    MAX_HISTORY_TURNS,
    MAX_TRANSCRIPT_CHARS,
    MAX_TRANSCRIPT_TURNS,
    MAX_TURN_CHARS,
    ROLES,
    check_turns,
)
from context_store.route.triggers import escalation_reasons
from context_store.route.webhooks import generate_secret, processed_delivery, sign_headers, verify

__all__ = [
    "ANSWER",
    "CALIBRATOR_FILE",
    "DERIVED_OUTCOMES",
    "ESCALATE",
    "FAILED_OUTCOMES",
    "FEATURES",
    "HANDOFF",
    "HANDOFF_REQUESTED",
    "KINDS",
    "MAX_HISTORY_TURNS",
    "MAX_TRANSCRIPT_CHARS",
    "MAX_TRANSCRIPT_TURNS",
    "MAX_TURN_CHARS",
    "OUTCOMES",
    "REASON_CODES",
    "ROLES",
    "STATUSES",
    "THUMBS",
    "Calibrator",
    "Decision",
    "HandoffOutcome",
    "OutboxWorker",
    "OutcomeReport",
    "Question",
    "Reason",
    "RecordedOutcome",
    "Responder",
    "Response",
    "RoutingConfig",
    "RoutingOutcome",
    "RoutingSignals",
    "SensitiveTopic",
    "Trigger",
    "WorkingMemory",
    "assign_question",
    "check_turns",
    "decide",
    "default_confidence",
    "deliver_due",
    "escalation_reasons",
    "failure_of",
    "fit_calibrator",
    "generate_secret",
    "get_question",
    "get_trace",
    "list_outcomes",
    "list_questions",
    "load_calibrator",
    "outbox_counts",
    "outcomes_for_trace",
    "processed_delivery",
    "record_outcome",
    "record_trace",
    "redeliver",
    "replay",
    "request_handoff",
    "respond",
    "route_question",
    "routing_config",
    "routing_signals",
    "set_status",
    "since_text",
    "sign_headers",
    "succeeded",
    "trace_dict",
    "verify",
]
