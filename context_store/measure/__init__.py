"""Step 8: freshness, outcomes and resolution, retrieval and routing quality, the promotion gate, replays, the report."""
from context_store.measure.backlog import reconciliation_diff
from context_store.measure.beir import BeirDataset, load_beir, write_corpus
from context_store.measure.checks import CheckOutcome
from context_store.measure.freshness import FreshnessReport, evaluate_checks, freshness_report
from context_store.measure.gate import (
    decision_since_promotion,
    evaluate_gate,
    gate_is_current,
    last_gate,
    measured_since_promotion,
    pending_change,
    promote,
    run_gate,
)
from context_store.measure.ir_metrics import expected_calibration_error
from context_store.measure.outcome_calibration import CANDIDATE_FILE, calibrate_from_outcomes, promote_candidate
from context_store.measure.quality import (
    baselines,
    evaluate_retrieval_quality,
    evaluate_routing_quality,
    learning_checks,
    record_evaluation,
    retrieval_checks,
    routing_checks,
    store_retrieval_quality,
)
from context_store.measure.question_calibration import calibrate_on_questions
from context_store.measure.questions import load_questions
from context_store.measure.replay import FileWrite, History, rounded_percentile, run_replay
from context_store.measure.report import build_report, render_html
from context_store.measure.resolution import CHECK_NAMES, RATE_KEYS, resolution_checks, resolution_scorecard
from context_store.measure.retrieval_eval import crossfit_ece, evaluate_retrieval, run_queries
from context_store.measure.routing_eval import run_routing_eval
from context_store.measure.routing_sets import convert_clinc150

__all__ = [
    "CANDIDATE_FILE",
    "CHECK_NAMES",
    "RATE_KEYS",
    "BeirDataset",
    "CheckOutcome",
    "FileWrite",
    "FreshnessReport",
    "History",
    "baselines",
    "build_report",
    "calibrate_from_outcomes",
    "calibrate_on_questions",
    "convert_clinc150",
    "crossfit_ece",
    "decision_since_promotion",
    "evaluate_checks",
    "evaluate_gate",
    "evaluate_retrieval",
    "evaluate_retrieval_quality",
    "evaluate_routing_quality",
    "expected_calibration_error",
    "freshness_report",
    "gate_is_current",
    "last_gate",
    "learning_checks",
    "load_beir",
    "load_questions",
    "measured_since_promotion",
    "pending_change",
    "promote",
    "promote_candidate",
    "reconciliation_diff",
    "record_evaluation",
    "render_html",
    "resolution_checks",
    "resolution_scorecard",
    "retrieval_checks",
    "rounded_percentile",
    "routing_checks",
    "run_gate",
    "run_queries",
    "run_replay",
    "run_routing_eval",
    "store_retrieval_quality",
    "write_corpus",
]
