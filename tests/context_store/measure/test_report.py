"""The support leads' report: numbers from history, one HTML page that renders in a headless browser."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.measure.quality import record_evaluation
from context_store.measure.report import build_report
from context_store.retrieve.retriever import Retriever
from context_store.route.decision import Reason, decide
from context_store.route.traces import record_trace
from context_store.store.context_store import ContextStore
from tests.conftest import REPO


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


@pytest.fixture
def history_store(store: ContextStore, sources: dict[str, Path]) -> ContextStore:
    embedder = HashingEmbedder()
    ingest(store, embedder)
    refunds = sources["company"] / "refunds.md"
    refunds.write_text(refunds.read_text().replace("within 30 days", "within 14 days"))
    ingest(store, embedder)
    for ndcg in (0.91, 0.88, 0.93):
        record_evaluation(store, kind="retrieval", set_name="demo", passed=True,
                          metrics={"ndcg@10": ndcg, "recall@10": 1.0, "mrr@10": 0.9, "answer_changed_current_wins": 0.875},
                          details={"worst": [{"question": "How long is the refund window?", "expected": ["company/refunds.md"],
                                              "returned": ["company/billing/invoices.md"], "rank_of_first_expected": 2}]})
    retriever = Retriever(store, embedder)
    for query, confidence, extra in (("refund window", 0.9, None), ("weather in Lisbon", 0.1, None),
                                     ("I want a person", 0.9, Reason("asked_for_person", "the user asked for a person", "routing"))):
        result = retriever.retrieve(query, k=2)
        record_trace(store, result, decide(result, confidence, 0.5, extra_reasons=[extra]), confidence_source="test")
    return store


def test_report_numbers_come_from_history(history_store: ContextStore) -> None:
    data = build_report(history_store)
    assert [p["ndcg@10"] for p in data["retrieval_quality"]["series"]["demo"]] == [0.91, 0.88, 0.93]
    assert data["retrieval_quality"]["latest"]["demo"]["metrics"]["ndcg@10"] == 0.93
    esc = data["escalations"]
    assert esc["requests"] == 3 and esc["escalations"] == 2 and esc["escalation_rate"] == pytest.approx(2 / 3)
    assert esc["reasons"]["low_confidence"] == 1 and esc["reasons"]["asked_for_person"] == 1
    assert data["freshness"]["versions_measured"] >= 1  # the edit's lag
    assert data["index"]["pending_candidate"] is None
    json.dumps(data)  # JSON-ready as it is


def test_report_renders_in_a_headless_browser(history_store: ContextStore, tmp_path: Path) -> None:
    browser = _browser()
    if browser is None:
        pytest.skip("no Chromium found: install it with `apt-get install -y chromium` (.ci/run does)")
    page = tmp_path / "report.html"
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--home", str(history_store.settings.home), "report", "--html", str(page),
         "--json", str(tmp_path / "report.json")],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["retrieval_quality"]["latest"]["demo"]["metrics"]["ndcg@10"] == 0.93
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}"]
    shot = tmp_path / "shot.png"
    subprocess.run([browser, *flags, f"--screenshot={shot}", "--window-size=1100,2600", page.as_uri()],
                   capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.stat().st_size > 20_000
    from PIL import Image

    pixels = Image.open(shot).convert("L")
    low, high = pixels.getextrema()
    assert high - low > 100  # not a blank page: text and plots drew something
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert 'data-key="demo.ndcg@10">0.930<' in dom
    assert 'data-key="escalation_rate">66.7 %<' in dom
    assert "asked_for_person" in dom and "How long is the refund window?" in dom
    # lag, quality, escalations, time to knowledge, and the resolution scorecard per day (issue 15)
    assert dom.count('src="data:image/png;base64,') == 5


@pytest.mark.filterwarnings("ignore::dagster.BetaWarning")
def test_quality_assets_run_after_an_index_change(tmp_path: Path) -> None:
    """Declarative automation: an index materialization requests the evaluation assets."""
    from assets.ingestion import company_chunk_index, user_state_index
    from pipeline.definitions import build_defs

    defs = build_defs()
    from pipeline.jobs import QUALITY_ASSETS

    selection = dg.AssetSelection.assets(*QUALITY_ASSETS)

    instance = dg.DagsterInstance.ephemeral()
    for key in (company_chunk_index.key, user_state_index.key):
        instance.report_runless_asset_event(dg.AssetMaterialization(key))
    for asset in QUALITY_ASSETS:
        instance.report_runless_asset_event(dg.AssetMaterialization(asset.key))
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection)
    assert first.total_requested == 0  # nothing changed since they last ran
    instance.report_runless_asset_event(dg.AssetMaterialization(company_chunk_index.key))
    second = dg.evaluate_automation_conditions(defs=defs, instance=instance, asset_selection=selection, cursor=first.cursor)
    requested = {r.key.to_user_string() for r in second.results if second.get_num_requested(r.key)}
    assert {"retrieval_quality", "index_candidate"} <= requested


def test_definitions_load_with_the_quality_assets() -> None:
    from pipeline.definitions import build_defs

    defs = build_defs()

    dg.Definitions.validate_loadable(defs)
    assert defs.resolve_job_def("quality_job") is not None
    assert defs.resolve_schedule_def("quality_schedule") is not None
    assert defs.resolve_sensor_def("quality_automation_sensor") is not None
