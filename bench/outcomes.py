"""Confidence learned from outcomes, end to end: does the served confidence get better when users' outcomes teach it?

For each labelled set (CLINC150 from ../shared/data, built by ``routing_sets.convert_clinc150``; the
demo's golden questions), in one run, through the real API (TestClient on ``create_app``, the ONNX
query encoder, SQLite, LanceDB):

1. the API serves with a calibrator fitted on a BEIR set (StackFAQ, ``freshcontext calibrate --beir``);
2. phase A (60 % of the questions, one user each) is asked through ``POST /v1/retrieve``; every
   answer gets the outcome a user would give: a right answer ``resolved``; a wrong one ``reopened``
   (half of them) or the user asks again in a new conversation a little later, which freshcontext
   records as ``repeat_contact`` itself; escalations get none (a person took over);
3. phase B (the other 40 %, never used for fitting) is asked: the served confidence *before*;
4. ``calibrate_from_outcomes`` fits on phase A's outcomes (threshold for the target precision), the
   file is installed, the running API reloads it, and phase B is asked again: *after*.

Printed for phase B: coverage at 95 % precision and ECE of the served confidence before and after,
next to the raw top-1 cosine (the raw top-score threshold), and answer rate / precision at the served
threshold. ``--json`` prints one object.

    PYTHONPATH=. python bench/outcomes.py [--json] [--skip-clinc] [--skip-demo] [--target-precision 0.95]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from context_store.index.embed.factory import build_embedder  # noqa: E402
from context_store.index.ingest import ingest  # noqa: E402
from context_store.measure.ir_metrics import coverage_at_precision, expected_calibration_error  # noqa: E402
from context_store.measure.outcome_calibration import calibrate_from_outcomes  # noqa: E402
from context_store.measure.questions import load_questions  # noqa: E402
from context_store.measure.resolution import resolution_scorecard  # noqa: E402
from context_store.measure.routing_eval import answered_right  # noqa: E402
from context_store.measure.routing_sets import build_kb_home, convert_clinc150  # noqa: E402
from context_store.route import CALIBRATOR_FILE  # noqa: E402
from context_store.settings import Settings  # noqa: E402
from context_store.store.context_store import ContextStore  # noqa: E402
from pipeline.cli import main as cli  # noqa: E402
from service.app import create_app  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
KEY = {"X-API-Key": "bench-key"}
SERVING = {"api_keys": ["bench-key"], "retrieval": {"calibrator_check_seconds": 0.0}, "user_state_max_age_hours": 24 * 3650}


def beir_calibrator(work: Path) -> dict[str, Any]:
    """``freshcontext calibrate --beir`` on StackFAQ: the calibrator a team would start from (label: relevant in the top 10)."""
    started = time.perf_counter()
    home = work / "beir_home"
    out = CliRunner().invoke(cli, ["--home", str(home), "calibrate", "--beir", str(SHARED / "stackfaq"), "--json"])
    if out.exit_code != 0:
        raise SystemExit(f"calibrate --beir failed: {out.output}")
    summary = json.loads(out.output[out.output.index("{"):])
    return {"path": str(home / CALIBRATOR_FILE), "queries": summary["queries"], "heldout_ece_on_stackfaq": summary["heldout_ece"],
            "seconds": round(time.perf_counter() - started, 1)}


def with_users(store: ContextStore, folder: Path, count: int) -> ContextStore:
    """One user per phase-A question (a repeat contact is the same user asking again)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (folder / f"b-{i}.json").write_text(json.dumps({"user_id": f"b-{i}", "captured_at": "2026-11-20T10:00:00Z",
                                                       "account": {"status": "active"}}))
    Settings.load(store.settings.home, user_sources=[{"name": "users", "path": str(folder)}], **SERVING).save()
    return ContextStore.open(store.settings.home)


def clinc_home(work: Path, embedder: Any) -> tuple[ContextStore, list[Any], dict[str, str]]:
    out = work / "clinc"
    convert_clinc150(SHARED / "clinc150", out)
    store, mapping = build_kb_home(out, work / "clinc_home", embedder)
    return store, load_questions(out / "queries.jsonl", answerable_need_docs=False), mapping


def demo_home(work: Path, embedder: Any) -> tuple[ContextStore, list[Any], None]:
    company = work / "demo_company"
    shutil.copytree(REPO / "demo" / "company", company)
    store = ContextStore.open(work / "demo_home", company_sources=[{"name": "company", "path": str(company)}])
    store.settings.save()
    ingest(store, embedder)
    return store, load_questions(REPO / "demo" / "golden" / "questions.jsonl"), None


class Phase:
    """Questions asked through the API; what was served and whether it was right."""

    def __init__(self) -> None:
        self.confidence: list[float] = []
        self.raw: list[float] = []
        self.right: list[bool] = []
        self.answered: list[bool] = []
        self.threshold = 0.0

    def add(self, body: dict[str, Any], right: bool) -> None:
        self.confidence.append(body["confidence"])
        # the raw top-score baseline: the best cosine served (the top document's, dense_top, in practice)
        self.raw.append(max((r["vector_score"] or 0.0 for r in body["results"]), default=0.0))
        self.right.append(right)
        self.answered.append(body["decision"] == "answer")
        self.threshold = body["threshold"]

    def summary(self, scores: list[float] | None = None) -> dict[str, Any]:
        s, y = np.asarray(scores if scores is not None else self.confidence, float), np.asarray(self.right, bool)
        return {"coverage_at_95": round(coverage_at_precision(s, y, 0.95), 4), "coverage_at_90": round(coverage_at_precision(s, y, 0.90), 4),
                "ece": round(expected_calibration_error(np.clip(s, 0, 1).tolist(), y.tolist()), 4)}

    def served(self) -> dict[str, Any]:
        y, answered = np.asarray(self.right, bool), np.asarray(self.answered, bool)
        return {**self.summary(), "threshold": round(self.threshold, 4), "answer_rate": round(float(answered.mean()), 4),
                "answer_precision": round(float(y[answered].mean()), 4) if answered.any() else None}


def ask(client: TestClient, q: Any, mapping: dict[str, str] | None, **extra: Any) -> tuple[dict[str, Any], bool]:
    r = client.post("/v1/retrieve", json={"query": q.text, **extra}, headers=KEY)
    assert r.status_code == 200, r.text
    body = r.json()
    return body, answered_right(q, body["results"][0]["doc_id"] if body["results"] else None, mapping)


def phase_a(client: TestClient, questions: list[Any], mapping: dict[str, str] | None, rng: random.Random) -> dict[str, int]:
    """Ask, then behave as a user would; returns what was posted."""
    posted = {"answered": 0, "escalated": 0, "resolved": 0, "reopened": 0, "came_back": 0}
    for i, q in enumerate(questions):
        body, right = ask(client, q, mapping, user_id=f"b-{i}", conversation_id=f"a-{i}")
        if body["decision"] != "answer":
            posted["escalated"] += 1
            continue
        posted["answered"] += 1
        if right:
            kind = "resolved"
        elif rng.random() < 0.5:
            kind = "reopened"
        else:  # the user comes back: freshcontext derives repeat_contact on this answer by itself
            ask(client, q, mapping, user_id=f"b-{i}", conversation_id=f"a-{i}-again")
            posted["came_back"] += 1
            continue
        r = client.post("/v1/outcomes", json={"event_id": f"bench-{i}", "trace_id": body["trace_id"], "outcome": kind}, headers=KEY)
        assert r.status_code == 201, r.text
        posted[kind] += 1
    return posted


def phase_b(client: TestClient, questions: list[Any], mapping: dict[str, str] | None) -> Phase:
    phase = Phase()
    for q in questions:
        phase.add(*ask(client, q, mapping))  # no user: nothing here is a repeat contact
    return phase


def run_set(name: str, store: ContextStore, questions: list[Any], mapping: dict[str, str] | None, beir: Path, embedder: Any,
            args: Any) -> dict[str, Any]:
    started = time.perf_counter()
    rng = random.Random(args.seed)
    order = list(questions)
    rng.shuffle(order)
    cut = int(len(order) * 0.6)
    a, b = order[:cut], order[cut:]
    store = with_users(store, store.settings.home / "bench_users", len(a))
    ingest(store, embedder)
    shutil.copyfile(beir, store.settings.home / CALIBRATOR_FILE)
    store.settings.outcomes.min_outcomes = args.min_outcomes
    with TestClient(create_app(store=store)) as client:
        posted = phase_a(client, a, mapping, rng)
        before = phase_b(client, b, mapping)
        try:
            calibration = calibrate_from_outcomes(store, target_precision=args.target_precision)
        except Exception as exc:  # too few outcomes: say so, keep the other figures
            return {"set": name, "questions": len(questions), "phase_a": posted, "refused": str(exc)}
        calibration.candidate.save(store.settings.home / CALIBRATOR_FILE)  # the running API reloads it
        after = phase_b(client, b, mapping)
    card = resolution_scorecard(store, days=1)
    return {
        "set": name, "questions": len(questions), "phase_a_questions": len(a), "phase_b_questions": len(b), "phase_a": posted,
        "calibration": {"train": calibration.train, "heldout": calibration.heldout, "passed": calibration.passed,
                        "verdict": calibration.reason, "threshold": calibration.candidate.threshold},
        "before_beir_calibrator": before.served(), "after_outcome_calibrator": after.served(),
        "raw_top_score": before.summary(before.raw),
        "scorecard": {k: card[k] for k in ("task_success_rate", "first_contact_resolution", "repeat_contact_rate", "reopen_rate",
                                           "confidence_outcome_gap", "outcomes_by_kind")},
        "seconds": round(time.perf_counter() - started, 1),
    }


def show(result: dict[str, Any]) -> None:
    print(f"beir calibrator: StackFAQ, {result['beir']['queries']} queries, {result['beir']['seconds']} s")
    for r in result["sets"]:
        if "refused" in r:
            print(f"{r['set']}: calibration refused: {r['refused']}")
            continue
        print(f"{r['set']}: {r['phase_a_questions']} questions with outcomes ({r['phase_a']}), {r['phase_b_questions']} held out")
        print(f"  {'phase B':<28}{'coverage@95':>12}{'ECE':>8}{'answer rate':>13}{'precision':>11}{'threshold':>11}")
        for label, key in (("before: BEIR calibrator", "before_beir_calibrator"), ("after: outcome calibrator", "after_outcome_calibrator")):
            s = r[key]
            print(f"  {label:<28}{s['coverage_at_95']:>12.4f}{s['ece']:>8.4f}{s['answer_rate']:>13.4f}"
                  f"{(s['answer_precision'] or 0):>11.4f}{s['threshold']:>11.4f}")
        raw = r["raw_top_score"]
        print(f"  {'raw top-1 cosine':<28}{raw['coverage_at_95']:>12.4f}{raw['ece']:>8.4f}")
        print(f"  calibration verdict: {r['calibration']['verdict']}; {r['seconds']} s")
    print(f"load average (1 min) at start {result['load_avg_1m']}, at end {result['load_avg_1m_end']}, {result['cores']} cores")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--skip-clinc", action="store_true")
    parser.add_argument("--skip-demo", action="store_true")
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--min-outcomes", type=int, default=20, help="outcomes.min_outcomes for the bench homes (the demo set is small)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--beir-calibrator", type=Path, default=None, help="reuse this StackFAQ calibrator.json instead of fitting one")
    args = parser.parse_args()
    if not (SHARED / "stackfaq").is_dir():
        raise SystemExit(f"no {SHARED / 'stackfaq'}: the BEIR calibrator is fitted on it")
    work = Path(tempfile.mkdtemp(prefix="freshcontext-bench-outcomes-"))
    try:
        result: dict[str, Any] = {"load_avg_1m": round(os.getloadavg()[0], 2), "cores": os.cpu_count(), "target_precision": args.target_precision}
        if args.beir_calibrator:
            data = json.loads(args.beir_calibrator.read_text())
            result["beir"] = {"path": str(args.beir_calibrator), "queries": data["samples"], "heldout_ece_on_stackfaq": data["heldout_ece"],
                              "seconds": 0.0}
        else:
            result["beir"] = beir_calibrator(work)
        beir = Path(result["beir"]["path"])
        embedder = build_embedder(ContextStore.open(work / "probe").settings.embedding, work / "probe")
        sets = []
        if not args.skip_clinc and (SHARED / "clinc150").is_dir():
            sets.append(run_set("clinc150", *clinc_home(work, embedder), beir, embedder, args))
        if not args.skip_demo:
            sets.append(run_set("demo_golden", *demo_home(work, embedder), beir, embedder, args))
        result["sets"] = sets
        result["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        show(result)


if __name__ == "__main__":
    main()
