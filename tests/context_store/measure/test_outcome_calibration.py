"""Confidence learned from outcomes: refused on too few, judged on held-out answers, promoted only when at least as good,
picked up by a running API without a restart."""

from __future__ import annotations

import json
import math
import random
from datetime import timedelta
from pathlib import Path

import dagster as dg
import pytest
from click.testing import CliRunner
from sqlalchemy import insert

from context_store._common import utcnow
from context_store.errors import TooFewOutcomes
from context_store.index.embed.fake import HashingEmbedder
from context_store.measure.outcome_calibration import (
    CANDIDATE_FILE,
    calibrate_from_outcomes,
    fit_with_threshold,
    labelled_responses,
)
from context_store.retrieve import Retriever
from context_store.route import CALIBRATOR_FILE, OutcomeReport, Question, Responder, load_calibrator, record_outcome, respond
from context_store.store.context_store import ContextStore
from context_store.store.models import RetrievalTrace
from pipeline.cli import main
from service.state import CalibratorWatch, ServiceState


@pytest.fixture
def home(tmp_path: Path) -> ContextStore:
    return ContextStore.open(tmp_path / "home", outcomes={"min_outcomes": 50, "min_per_class": 5})


def features(top: float) -> dict[str, float]:
    return {"dense_top": top, "dense_margin": 0.05, "text_top": 3.0, "text_ratio": 0.5, "agreement": 1.0, "top_age_days": 1.0}


def served(store: ContextStore, n: int, label, *, start_hours: float = 100.0, span_hours: float | None = None,  # type: ignore[no-untyped-def]
           seed: int = 1) -> list[float]:
    """``n`` bot answers served evenly over ``span_hours`` from ``start_hours`` ago, each with the outcome ``label(top)`` says."""
    rng = random.Random(seed)
    now = utcnow()
    span = start_hours if span_hours is None else span_hours
    tops = []
    for i in range(n):
        top = rng.uniform(0.3, 0.95)
        at = now - timedelta(hours=start_hours) + timedelta(hours=i * span / max(n, 1))
        trace_id = f"tr-test-{seed}-{i}"
        with store.engine.begin() as conn:
            conn.execute(insert(RetrievalTrace.__table__), [{  # type: ignore[attr-defined]
                "trace_id": trace_id, "created_at": at, "query": f"question {i}", "k": 5, "mode": "hybrid", "model": "m",
                "confidence": 0.7, "confidence_source": "fixed", "threshold": 0.5, "features": features(top), "decision": "answer",
            }])
        kind = "resolved" if label(top, rng) else "reopened"
        record_outcome(store, OutcomeReport(event_id=f"ev-{seed}-{i}", trace_id=trace_id, outcome=kind, at=at + timedelta(minutes=5)))
        tops.append(top)
    return tops


def logistic(top: float, rng: random.Random) -> bool:
    return rng.random() < 1 / (1 + math.exp(-12 * (top - 0.62)))


def test_too_few_outcomes_is_refused_with_how_many_are_needed(home: ContextStore) -> None:
    served(home, 20, logistic)
    with pytest.raises(TooFewOutcomes) as err:
        calibrate_from_outcomes(home)
    assert err.value.found == 20 and err.value.needed == 50
    assert "20 (" in str(err.value) and "at least 50" in str(err.value) and "outcomes.min_outcomes" in str(err.value)
    result = CliRunner().invoke(main, ["--home", str(home.settings.home), "calibrate", "--outcomes"])
    assert result.exit_code != 0 and "at least 50" in result.output and not (home.settings.home / CALIBRATOR_FILE).exists()


def test_only_bot_answers_with_outcomes_are_labelled(home: ContextStore) -> None:
    served(home, 12, lambda top, rng: top > 0.6)
    with home.engine.begin() as conn:  # an escalated response with an outcome says nothing about the bot's context
        conn.execute(insert(RetrievalTrace.__table__), [{  # type: ignore[attr-defined]
            "trace_id": "tr-esc", "created_at": utcnow() - timedelta(hours=1), "query": "q", "k": 5, "mode": "hybrid", "model": "m",
            "confidence": 0.1, "confidence_source": "fixed", "threshold": 0.5, "features": features(0.2), "decision": "escalate"}])
    record_outcome(home, OutcomeReport(event_id="ev-esc", trace_id="tr-esc", outcome="resolved"))
    rows = labelled_responses(home)
    assert len(rows) == 12 and "tr-esc" not in {r.trace_id for r in rows}
    assert all(r.succeeded == (r.features["dense_top"] > 0.6) for r in rows)


def test_calibrate_outcomes_reports_old_and_new_and_saves_the_threshold(home: ContextStore) -> None:
    served(home, 200, logistic)
    out = CliRunner().invoke(main, ["--home", str(home.settings.home), "calibrate", "--outcomes", "--target-precision", "0.9"])
    assert out.exit_code == 0, out.output
    assert "conservative default" in out.output and "from outcomes" in out.output and "ECE" in out.output
    assert "coverage at target" in out.output and "saved" in out.output
    saved = load_calibrator(home.settings.home / CALIBRATOR_FILE)
    assert saved is not None and saved.target_precision == 0.9 and 0.0 < saved.threshold < 1.0
    assert saved.evaluation["passed"] is True and saved.evaluation["new"]["ece"] <= saved.evaluation["old"]["ece"]
    data = json.loads(CliRunner().invoke(main, ["--home", str(home.settings.home), "calibrate", "--outcomes", "--json"]).output)
    assert data["train"] == 140 and data["heldout"] == 60 and set(data["old"]) >= {"ece", "coverage_at_target", "precision", "threshold"}


def test_since_limits_the_answers_used(home: ContextStore) -> None:
    served(home, 60, logistic)
    since = (utcnow() - timedelta(hours=30)).date().isoformat()
    out = CliRunner().invoke(main, ["--home", str(home.settings.home), "calibrate", "--outcomes", "--since", since])
    assert out.exit_code != 0 and f"since {since}" in out.output


def _materialize(store: ContextStore) -> dg.ExecuteInProcessResult:
    from assets.outcomes import outcome_calibration, outcome_calibrator
    from assets.resources import StoreResource

    return dg.materialize([outcome_calibration, outcome_calibrator], resources={"store": StoreResource(home=str(store.settings.home))},
                          raise_on_error=False)


def test_the_asset_promotes_a_better_calibrator_and_the_check_blocks_a_worse_one(home: ContextStore) -> None:
    served(home, 200, logistic)
    result = _materialize(home)
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "calibrator_at_least_as_good")
    assert check.passed
    installed = load_calibrator(home.settings.home / CALIBRATOR_FILE)
    assert installed is not None and installed.threshold is not None  # promoted by outcome_calibrator

    # drift: newer answers follow a sharp rule the old calibrator knows, older ones are noise; a fit on the
    # old noise cannot match it on the newest answers, so the blocking check fails and nothing is installed
    worse = ContextStore.open(home.settings.home.parent / "home2", outcomes={"min_outcomes": 50, "holdout_share": 0.3})
    served(worse, 140, lambda top, rng: rng.random() < 0.5, start_hours=300, span_hours=150, seed=2)
    served(worse, 60, lambda top, rng: top > 0.62, start_hours=100, seed=3)
    rule = [features(0.3 + i * 0.65 / 99) for i in range(100)]
    sharp = fit_with_threshold(rule, [f["dense_top"] > 0.62 for f in rule], 0.9, model="", l2=1e-3)
    sharp.save(worse.settings.home / CALIBRATOR_FILE)
    before = (worse.settings.home / CALIBRATOR_FILE).read_bytes()
    result = _materialize(worse)
    check = next(e for e in result.get_asset_check_evaluations() if e.check_name == "calibrator_at_least_as_good")
    assert not check.passed and "worse" in (check.description or "") + str(check.metadata)
    assert (worse.settings.home / CALIBRATOR_FILE).read_bytes() == before  # the sharp one stays
    assert (worse.settings.home / CANDIDATE_FILE).exists()


def test_too_few_outcomes_is_not_a_failed_check(home: ContextStore) -> None:
    served(home, 10, logistic)
    result = _materialize(home)
    assert all(e.passed for e in result.get_asset_check_evaluations())
    assert not (home.settings.home / CALIBRATOR_FILE).exists()


def test_the_calibrators_threshold_decides_and_a_running_api_reloads_it(sources: dict[str, Path]) -> None:
    from context_store.index.ingest import ingest

    store = ContextStore.open(sources["home"], company_sources=[{"name": "company", "path": str(sources["company"])}],
                              retrieval={"calibrator_check_seconds": 0.0})
    ingest(store, HashingEmbedder())
    state = ServiceState(store, embedder=HashingEmbedder())
    assert state.serving().responder.threshold == 0.5 and state.calibrator is None  # the setting, no calibrator yet
    rows = [features(0.3 + i * 0.006) for i in range(100)]
    calibrator = fit_with_threshold(rows, [f["dense_top"] > 0.5 for f in rows], 0.9, model="")
    calibrator.threshold = 0.02  # a threshold that answers almost everything: respond() must use it
    calibrator.save(store.settings.home / CALIBRATOR_FILE)
    responder = state.serving().responder  # the next request sees the new file: no restart
    assert state.calibrator_reloads == 1 and responder.threshold == 0.02
    verdict = respond(responder, Question("How long is the refund window?"), record=False)
    assert verdict.decision.threshold == 0.02
    (store.settings.home / CALIBRATOR_FILE).write_text("{ not json")
    assert state.serving().responder.threshold == 0.02  # a damaged file: the one in use stays, the error is shown
    assert state.calibrator_error and "not a calibrator" in state.status()["calibrator_error"]
    plain = Responder(store, Retriever(store, HashingEmbedder()))
    assert plain.threshold == 0.5


def test_the_calibrator_watch_costs_a_clock_read_between_looks(tmp_path: Path) -> None:
    ticks = [0.0]
    watch = CalibratorWatch(tmp_path / CALIBRATOR_FILE, interval=2.0, clock=lambda: ticks[0])
    (tmp_path / CALIBRATOR_FILE).write_text("{}")
    assert not watch.changed() and watch.checks == 0  # not due: no stat at all
    ticks[0] = 2.5
    assert watch.changed() and watch.checks == 1
    ticks[0] = 3.0
    assert not watch.changed() and watch.checks == 1
    ticks[0] = 5.0
    assert not watch.changed() and watch.checks == 2  # looked, nothing changed


def test_the_routing_check_judges_the_served_confidence_not_the_cross_fitted_one() -> None:
    from context_store.measure.quality import SetQuality, routing_checks
    from context_store.settings import QualityConfig

    config = QualityConfig(routing_ece_ceiling=0.15)
    # a well cross-fitted calibrator does not excuse an uncalibrated served confidence (the demo before issue 15: 0.44)
    served_bad = [SetQuality("demo", "golden", {"ece": 0.07, "served_ece": 0.44})]
    (outcome,) = routing_checks(served_bad, config)
    assert not outcome.passed and outcome.value == 0.44 and "cross-fitted calibrator 0.070" in outcome.detail
    assert all(o.passed for o in routing_checks([SetQuality("demo", "golden", {"ece": 0.3, "served_ece": 0.07})], config))
    # on outcomes: judged once there are enough answers with outcomes
    ok = [SetQuality("demo", "golden", {"ece": 0.07, "served_ece": 0.07})]
    assert len(routing_checks(ok, config, outcome_gap=(0.4, 5, 20))) == 1  # too few to judge: not a condition yet
    on_outcomes = routing_checks(ok, config, outcome_gap=(0.4, 25, 20))[-1]
    assert on_outcomes.name == "outcomes: served ece <= ceiling" and not on_outcomes.passed
