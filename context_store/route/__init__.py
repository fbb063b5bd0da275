"""Step 6 of the data flow: what to do with a question once its context is retrieved.

``respond()`` is the whole use case (retrieve, confidence, triggers, outcome signals,
``decide()``, route, trace) that the API, MCP, the CLI and the evaluations call. The rest
is its parts: the calibrated confidence, the one decision rule and its reason type, the
escalation triggers, routed questions with their working memory, evidence traces, the
outbox of notifications and signed webhooks.
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
from context_store.route.outbox import OutboxWorker, deliver_due, outbox_counts, redeliver
from context_store.route.policy import RoutingConfig, SensitiveTopic, routing_config
from context_store.route.questions import (
    STATUSES,
    RoutingOutcome,
    assign_question,
    get_question,
    list_questions,
    route_question,
    set_status,
)
from context_store.route.respond import Question, Responder, Response, respond
from context_store.route.signals import RoutingSignals, routing_signals
from context_store.route.traces import get_trace, record_trace, replay, trace_dict
from context_store.route.triggers import escalation_reasons
from context_store.route.webhooks import generate_secret, processed_delivery, sign_headers, verify

__all__ = [
    "ANSWER",
    "CALIBRATOR_FILE",
    "ESCALATE",
    "FEATURES",
    "REASON_CODES",
    "STATUSES",
    "Calibrator",
    "Decision",
    "OutboxWorker",
    "Question",
    "Reason",
    "Responder",
    "Response",
    "RoutingConfig",
    "RoutingOutcome",
    "RoutingSignals",
    "SensitiveTopic",
    "Trigger",
    "assign_question",
    "decide",
    "default_confidence",
    "deliver_due",
    "escalation_reasons",
    "fit_calibrator",
    "generate_secret",
    "get_question",
    "get_trace",
    "list_questions",
    "load_calibrator",
    "outbox_counts",
    "processed_delivery",
    "record_trace",
    "redeliver",
    "replay",
    "respond",
    "route_question",
    "routing_config",
    "routing_signals",
    "set_status",
    "sign_headers",
    "trace_dict",
    "verify",
]
