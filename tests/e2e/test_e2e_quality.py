"""Quality end to end: the demo help centre, the real model, real Dagster, SQLite and LanceDB.

The demo is ingested once for the module (original articles, then the edits) and given a
calibrator fitted on its golden questions, as ``freshcontext demo`` does; each test then
materializes quality assets on it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
from sqlmodel import select

from assets.resources import StoreResource
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.embed.protocol import Embedder
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder
from context_store.index.ingest import ingest
from context_store.settings import EmbeddingConfig, Settings
from context_store.store.context_store import ContextStore
from context_store.store.models import IndexDeployment, PromotionDecision
from pipeline.jobs import QUALITY_ASSETS
from pipeline.resources import build_resources
from tests.conftest import REPO

pytestmark = pytest.mark.e2e
DEMO = REPO / "demo"


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("quality") / "home"
    company, users = home / "sources" / "company", home / "sources" / "users"
    shutil.copytree(DEMO / "company", company)
    shutil.copytree(DEMO / "users", users)
    Settings.load(
        home, company_sources=[{"name": "company", "path": str(company)}], user_sources=[{"name": "users", "path": str(users)}],
        quality={"golden_sets": [{"name": "demo", "path": str(DEMO / "golden" / "questions.jsonl")}]},
    ).save()
    embedder = SentenceTransformerEmbedder()
    ingest(ContextStore.open(home), embedder)
    for src in (DEMO / "company_edits").rglob("*"):
        if src.is_file() and src.name != "README.md":
            shutil.copyfile(src, company / src.relative_to(DEMO / "company_edits"))
    ingest(ContextStore.open(home), embedder)
    from context_store.measure.question_calibration import calibrate_on_questions
    from context_store.measure.questions import load_questions
    from context_store.route import CALIBRATOR_FILE

    golden = DEMO / "golden" / "questions.jsonl"
    calibrator, _ = calibrate_on_questions(ContextStore.open(home), embedder, load_questions(golden), name=str(golden))
    calibrator.save(home / CALIBRATOR_FILE)
    return home


def _meta(result: dg.ExecuteInProcessResult, node: str) -> dict[str, object]:
    return {k: v.value for k, v in result.asset_materializations_for_node(node)[-1].metadata.items()}


def _checks(result: dg.ExecuteInProcessResult) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def test_quality_assets_materialize_on_the_demo(demo_home: Path) -> None:
    result = dg.materialize(QUALITY_ASSETS, resources=build_resources(str(demo_home)), raise_on_error=False)
    assert result.success
    checks = _checks(result)
    assert checks["retrieval_above_floor"] and checks["current_answer_wins"] and checks["candidate_at_least_as_good"]
    assert checks["routing_ece_under_ceiling"] and checks["time_to_knowledge_within_ceiling"] and checks["answers_become_retrievable"]
    meta = _meta(result, "retrieval_quality")
    assert meta["demo/queries"] == 80 and meta["demo/answer_changed_questions"] == 11
    assert 0.85 <= meta["demo/ndcg@10"] <= 1.0 and meta["demo/recall@10"] >= 0.95  # measured: 0.958 / 1.0
    assert meta["demo/answer_changed_current_wins"] >= 0.8 and meta["demo/answer_changed_stale_served"] == 0.0
    assert "| question | expected |" in str(meta["demo/worst_queries"])
    assert _meta(result, "index_promotion")["decision"] == "nothing pending"
    routing = _meta(result, "routing_quality")
    assert routing["demo/queries"] == 100 and routing["demo/answerable"] == 80
    assert routing["demo/ece"] <= 0.15 and routing["demo/escalation_recall"] >= 0.5  # measured: 0.074 / 0.80
    assert 0.0 < routing["demo/coverage_at_target"] <= 1.0
    # the policy the API serves (the demo's calibrator and its threshold), judged by routing_ece_under_ceiling
    # measured (coverage-gated fusion): ECE 0.049, 18 % escalated, 80 % of the unanswerable among them
    assert routing["demo/served_ece"] <= 0.15 and 0.15 <= routing["demo/served_escalation_rate"] <= 0.6
    assert routing["demo/served_escalation_recall"] >= 0.75  # escalating less is fine only while it still catches these
    assert "low_confidence" in str(routing["demo/escalations_by_reason"])
    learning = _meta(result, "learning_report")
    assert learning["answers"] == 0 and learning["reasked_answered_without_person"] == 0

    # the report shows the same numbers (the CLI, as a support lead runs it)
    out = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--home", str(demo_home), "report", "--json", "-"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    )
    data = json.loads(out.stdout)
    assert data["retrieval_quality"]["latest"]["demo"]["metrics"]["ndcg@10"] == pytest.approx(meta["demo/ndcg@10"], abs=1e-4)
    assert data["freshness"]["versions_measured"] >= 1
    assert data["routing_quality"]["latest"]["demo"]["ece"] == pytest.approx(routing["demo/ece"], abs=1e-4)


def test_the_demo_answers_clear_questions_and_escalates_the_rest(demo_home: Path) -> None:
    from fastapi.testclient import TestClient

    from service.app import create_app

    settings = Settings.load(demo_home)
    settings.api_keys = ["demo-key"]
    settings.save()
    with TestClient(create_app(store=ContextStore.open(demo_home), embedder=SentenceTransformerEmbedder())) as client:
        def ask(query: str) -> dict:
            r = client.post("/v1/retrieve", json={"query": query}, headers={"X-API-Key": "demo-key"})
            assert r.status_code == 200, r.text
            return r.json()

        clear = ask("How many days do I have to report a damaged item?")
        assert clear["decision"] == "answer", clear["reasons"]
        assert clear["results"][0]["doc_id"] == "company/refunds/damaged-item-refunds.md"
        assert clear["confidence_source"].startswith("calibrator") and clear["threshold"] < 0.8
        assert ask("Do you sell dog food?")["decision"] == "escalate"
    data = json.loads(subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--home", str(demo_home), "report", "--json", "-"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=True,
    ).stdout)
    assert data["escalations"]["requests"] >= 2 and 0.0 < data["escalations"]["escalation_rate"] < 1.0  # the report shows it


class _WrongCandidateModel:
    """Serves with the real model; a candidate is built with a model that is not a sentence encoder at all."""

    def __init__(self) -> None:
        self.real = SentenceTransformerEmbedder()

    def for_store(self, store: ContextStore) -> Embedder:
        return self.real

    def for_config(self, config: EmbeddingConfig, home: Path | None = None) -> Embedder:
        return HashingEmbedder(dim=384, name=config.model)


def test_a_wrong_model_fails_the_blocking_gate_and_is_not_promoted(demo_home: Path) -> None:
    settings = Settings.load(demo_home)
    settings.embedding.model = "wrong-model"
    settings.save()
    try:
        resources = {"store": StoreResource(home=str(demo_home)), "embedder": dg.ResourceDefinition.hardcoded_resource(_WrongCandidateModel())}
        result = dg.materialize(QUALITY_ASSETS[1:], resources=resources, raise_on_error=False)
        assert _checks(result)["candidate_at_least_as_good"] is False
        assert not result.asset_materializations_for_node("index_promotion")  # the blocking check stopped it
        meta = _meta(result, "index_candidate")
        assert meta["gate"] == "rejected" and meta["demo/candidate_ndcg@10"] < meta["demo/live_ndcg@10"]
        store = ContextStore.open(demo_home)
        with store.session() as s:
            serving = s.exec(select(IndexDeployment).where(IndexDeployment.status == "serving")).one()
            decisions = s.exec(select(PromotionDecision)).all()
        assert serving.company_table == "company_chunks" and serving.model == "all-MiniLM-L6-v2"
        assert [d.decision for d in decisions] == ["rejected"]
        # nothing changed since: the next run keeps the verdict without evaluating again
        again = dg.materialize(QUALITY_ASSETS[1:3], resources=resources, raise_on_error=False)
        assert _checks(again)["candidate_at_least_as_good"] is False
        assert _meta(again, "index_candidate")["evaluated_now"] is False
        assert store.settings.embedding.model == "all-MiniLM-L6-v2"  # the old index keeps serving, with its model
    finally:
        settings.embedding.model = "all-MiniLM-L6-v2"
        settings.save()


def test_an_emptied_index_fails_the_blocking_quality_check(demo_home: Path) -> None:
    store = ContextStore.open(demo_home)
    store.index.table(store.index.company_table_name).delete("true")
    result = dg.materialize(QUALITY_ASSETS[:1], resources=build_resources(str(demo_home)), raise_on_error=False)
    checks = _checks(result)
    assert checks["retrieval_above_floor"] is False and checks["retrieval_not_below_last_good"] is False
    assert _meta(result, "retrieval_quality")["demo/ndcg@10"] == 0.0

