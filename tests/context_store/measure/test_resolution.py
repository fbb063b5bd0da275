"""The resolution scorecard on a known story (real respond(), outcomes, staff answers, SQLite), its asset and checks
(real Dagster: each check can fail), the report's section and the Prometheus counters."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from context_store._common import utcnow
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.learn.answers import store_answer
from context_store.measure.ir_metrics import expected_calibration_error
from context_store.measure.resolution import CHECK_NAMES, resolution_checks, resolution_scorecard
from context_store.retrieve import Retriever
from context_store.route import OutcomeReport, Question, Responder, assign_question, record_outcome, respond
from context_store.store.context_store import ContextStore
from tests.conftest import REPO, open_with_staff_answers


class _Fixed(Responder):
    value = 0.9

    def confidence(self, result):  # type: ignore[no-untyped-def]
        return self.value, "fixed by the test"


@pytest.fixture
def story(sources: dict[str, Path]) -> dict[str, Any]:
    """Seven responses: A resolved; B resolved then reopened; C unresolved; D no outcome; E escalated, answered by staff,
    then resolved; F escalated, nobody answered (an owner took it); G answered, and the user came back (G2)."""
    for n in range(3, 7):
        (sources["users"] / f"u-{n}.json").write_text(json.dumps({"user_id": f"u-{n}", "captured_at": "2026-11-20T10:00:00Z"}))
    kb = open_with_staff_answers(sources, user_state_max_age_hours=24 * 3650)
    ingest(kb, HashingEmbedder())
    now = utcnow()

    def ask(query: str, confidence: float, user: str | None, conversation: str, at: Any = None):  # type: ignore[no-untyped-def]
        responder = _Fixed(kb, Retriever(kb, HashingEmbedder()))
        responder.value = confidence
        return respond(responder, Question(query, user_id=user, conversation_id=conversation), now=at)

    def outcome(name: str, trace: str, kind: str, hours: float) -> None:
        at = now + timedelta(hours=hours)
        record_outcome(kb, OutcomeReport(event_id=f"{name}-{kind}-{hours}", trace_id=trace, outcome=kind, at=at), now=at)

    t = {name: ask(q, c, u, f"conv-{name}") for name, q, c, u in (
        ("A", "How long is the refund window?", 0.9, "u-1"), ("B", "Where do I download invoices?", 0.9, "u-2"),
        ("C", "How do I ask for a refund in settings?", 0.8, "u-3"), ("D", "Are invoices PDF files?", 0.7, None),
        ("E", "Can I pay with a gift voucher from a shop?", 0.1, "u-4"), ("F", "Do you ship lamps to Iceland?", 0.1, "u-5"),
        ("G", "What is the refund policy for Lumora purchases?", 0.6, "u-6"))}
    t["G2"] = ask("What is the refund policy for Lumora purchases?", 0.9, "u-6", "conv-G2", at=now + timedelta(hours=3))
    outcome("A", t["A"].trace_id, "resolved", 1)
    outcome("B", t["B"].trace_id, "resolved", 1)
    outcome("B", t["B"].trace_id, "reopened", 2)
    outcome("C", t["C"].trace_id, "unresolved", 1)
    store_answer(kb, t["E"].routed.question_id, author="maria", text="Gift vouchers from shops work at checkout.", now=now + timedelta(hours=2))
    outcome("E", t["E"].trace_id, "resolved", 3)
    assign_question(kb, t["F"].routed.question_id, "lee")
    return {"kb": kb, "traces": t, "now": now}


def test_the_scorecard_counts_what_users_got(story: dict[str, Any]) -> None:
    kb, t = story["kb"], story["traces"]
    card = resolution_scorecard(kb, days=1, now=story["now"] + timedelta(hours=4))
    assert card["responses"] == 8 and card["responses_with_outcome"] == 5  # A B C E G
    assert card["outcomes_by_kind"] == {"reopened": 1, "repeat_contact": 1, "resolved": 3, "unresolved": 1}
    assert card["task_success_rate"] == pytest.approx(2 / 5)  # A and E
    assert card["first_contact_resolution"] == pytest.approx(1 / 5)  # A: E needed a person
    assert card["repeat_contact_rate"] == pytest.approx(1 / 4)  # G of the bot answers to known users A B C G
    assert card["reopen_rate"] == pytest.approx(1 / 3)  # B of A B E
    assert card["escalation_success_rate"] == pytest.approx(1 / 3)  # E of E F G2
    assert card["time_to_resolve_p50_s"] == pytest.approx(3600, abs=5) and card["resolved"] == 3  # A 1 h, B 1 h, E 2 h (staff)
    # questions: E F G2 escalations, reviews of B C G; E answered, F owned
    assert card["questions"] == 6 and card["owner_assignment_rate"] == pytest.approx(2 / 6)
    gap = expected_calibration_error([0.9, 0.9, 0.8, 0.6], [True, False, False, False])
    assert card["confidence_outcome_gap"] == pytest.approx(gap) and card["confidence_outcome_n"] == 4
    # The story spans 3 h of real time: one UTC day, or two when it runs across midnight.
    days = card["daily"]
    assert len(days) in (1, 2) and sum(day["responses"] for day in days) == 8
    if len(days) == 1:
        assert days[0]["task_success_rate"] == card["task_success_rate"]
    earlier = resolution_scorecard(kb, days=1, now=story["now"] + timedelta(minutes=30))  # before any outcome arrived
    assert earlier["responses_with_outcome"] == 0 and earlier["task_success_rate"] is None
    assert t["G2"].decision.decision == "escalate"


_FAILING = {  # one setting per check that makes the story fail it
    "task_success_above_floor": {"task_success_floor": 0.5},
    "first_contact_resolution_above_floor": {"first_contact_resolution_floor": 0.5},
    "repeat_contact_under_ceiling": {"repeat_contact_rate_max": 0.2},
    "reopen_under_ceiling": {"reopen_rate_max": 0.2},
    "escalation_success_above_floor": {"escalation_success_floor": 0.5},
    "owner_assignment_above_floor": {"owner_assignment_floor": 0.5},
    "time_to_resolve_p95_under_ceiling": {"time_to_resolve_p95_max_s": 1800.0},
    "confidence_outcome_gap_under_ceiling": {"confidence_outcome_gap_max": 0.1},
}


@pytest.mark.parametrize("check", CHECK_NAMES)
def test_each_check_fails_below_its_floor(story: dict[str, Any], check: str) -> None:
    from context_store.settings import OutcomesConfig

    card = resolution_scorecard(story["kb"], days=1, now=story["now"] + timedelta(hours=4))
    lenient = OutcomesConfig(scorecard_min_outcomes=1, task_success_floor=0, first_contact_resolution_floor=0, repeat_contact_rate_max=1,
                             reopen_rate_max=1, escalation_success_floor=0, owner_assignment_floor=0, confidence_outcome_gap_max=1)
    assert all(o.passed for o in resolution_checks(card, lenient))
    strict = lenient.model_copy(update=_FAILING[check])
    failed = [o.name for o in resolution_checks(card, strict) if not o.passed]
    assert failed == [check]
    waiting = resolution_checks(card, strict.model_copy(update={"scorecard_min_outcomes": 50}))
    assert all(o.passed and "needed to judge" in o.detail for o in waiting)  # too little data: waits, says for how much


def _shift_back(kb: ContextStore, *, hours: float) -> None:
    """Move the whole story ``hours`` into the past (every time it recorded)."""
    from sqlalchemy import update

    from context_store.store.models import Outcome, QuestionAsk, RetrievalTrace, RoutedQuestion, StaffAnswer

    delta = timedelta(hours=hours)
    with kb.session() as s:
        for model, key, column in ((RetrievalTrace, "trace_id", "created_at"), (Outcome, "id", "at"), (RoutedQuestion, "question_id", "created_at"),
                                   (QuestionAsk, "id", "asked_at"), (StaffAnswer, "answer_id", "received_at")):
            table = model.__table__  # type: ignore[attr-defined]
            for row_key, when in s.execute(table.select().with_only_columns(table.c[key], table.c[column])).all():
                s.execute(update(table).where(table.c[key] == row_key).values({column: when - delta}))


def test_the_asset_reports_numbers_and_its_checks_can_fail(story: dict[str, Any]) -> None:
    from assets.outcomes import resolution_scorecard_asset
    from assets.resources import StoreResource

    kb = story["kb"]
    _shift_back(kb, hours=5)  # the story's outcomes are hours ahead of the clock; the asset's window ends now
    kb.settings.outcomes.scorecard_min_outcomes = 1
    kb.settings.outcomes.task_success_floor = 0.99
    kb.settings.save()
    result = dg.materialize([resolution_scorecard_asset], resources={"store": StoreResource(home=str(kb.settings.home))}, raise_on_error=False)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert set(checks) == set(CHECK_NAMES) and checks["task_success_above_floor"] is False
    meta = {k: v.value for k, v in result.asset_materializations_for_node("resolution_scorecard")[-1].metadata.items()}
    assert meta["responses"] == 8 and meta["task_success_rate"] == pytest.approx(0.4) and "| day |" in str(meta["daily"])


def test_the_report_has_the_scorecard_and_a_browser_draws_it(story: dict[str, Any], tmp_path: Path) -> None:
    import shutil

    kb = story["kb"]
    page = tmp_path / "report.html"
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "--home", str(kb.settings.home), "report", "--html", str(page),
                          "--json", str(tmp_path / "r.json")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    section = json.loads((tmp_path / "r.json").read_text())["resolution"]
    assert section["responses"] == 8 and "daily" in section and "repeat_contact_rate" in section
    html = page.read_text()
    assert 'id="resolution"' in html and 'data-key="resolution.task_success_rate"' in html
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no Chromium found: install it with `apt-get install -y chromium` (.ci/run does)")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([shutil.which(browser), *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert "Did users get what they needed?" in dom and 'data-key="resolution.first_contact_resolution"' in dom
    shot = tmp_path / "shot.png"
    subprocess.run([shutil.which(browser), *flags, f"--screenshot={shot}", "--window-size=1100,1600", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    from PIL import Image

    low, high = Image.open(shot).convert("L").getextrema()
    assert shot.stat().st_size > 20_000 and high - low > 100
