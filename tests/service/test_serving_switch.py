"""A running API follows a promotion without restart: real SQLite and LanceDB, fake (hashing) encoders."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.embed.torch_backend import SentenceTransformerEmbedder
from context_store.index.ingest import ingest
from context_store.measure.gate import run_gate
from context_store.settings import EmbeddingConfig
from context_store.store.context_store import ContextStore
from context_store.store.serving import DeploymentWatch
from service.app import create_app
from service.state import ServiceState

KEY = {"X-API-Key": "test-key"}
ADMIN = {"X-API-Key": "admin-key"}  # /readyz's details are for operators
CHECK_S = 0.2
WIDE = "hashing-wide-test-model"
GOLDEN = [
    {"id": "g1", "text": "refund window days delivery", "answerable": True, "expected_doc_ids": ["company/refunds.md"]},
    {"id": "g2", "text": "download invoices pdf billing history", "answerable": True, "expected_doc_ids": ["company/billing/invoices.md"]},
    {"id": "g3", "text": "how to ask for a refund in orders", "answerable": True, "expected_doc_ids": ["company/refunds.md"]},
]


def _open(home: Path, sources: dict[str, Path], golden: Path, retrieval: dict[str, Any] | None = None, **overrides: Any) -> ContextStore:
    """The home as a process opens it; ``overrides`` are config changes (a new model or chunker)."""
    return ContextStore.open(
        home, company_sources=[{"name": "company", "path": str(sources["company"])}],
        user_sources=[{"name": "users", "path": str(sources["users"])}], api_keys=[{"name": "bot", "key": "test-key"}, {"name": "ops", "key": "admin-key", "role": "admin"}],
        retrieval={"refresh_interval_seconds": 0.0, "deployment_check_seconds": CHECK_S, **(retrieval or {})},
        quality={"golden_sets": [{"name": "mini", "path": str(golden)}], "ndcg_floor": 0.3, "recall_floor": 0.3, "mrr_floor": 0.3},
        **overrides,
    )


@pytest.fixture
def golden(tmp_path: Path) -> Path:
    path = tmp_path / "golden.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in GOLDEN) + "\n")
    return path


@pytest.fixture
def live(sources: dict[str, Path], golden: Path) -> ContextStore:
    store = _open(sources["home"], sources, golden)
    ingest(store, HashingEmbedder())
    return store


def _encoder_for(config: EmbeddingConfig) -> HashingEmbedder:
    # Each model gets its own vector width, so a query vector of one model searched against
    # the other model's vectors would fail with a shape error instead of passing unnoticed.
    # (Fake names only: the process caches vectors by model name, see routing._EXAMPLES.)
    return HashingEmbedder(dim=96, name=WIDE) if config.model == WIDE else HashingEmbedder()


def _ask(client: TestClient) -> dict[str, Any]:
    r = client.post("/v1/retrieve", json={"query": "how long is the refund window", "k": 3}, headers=KEY)
    assert r.status_code == 200, r.text
    body = r.json()
    return {**client.get(f"/v1/traces/{body['trace_id']}", headers=KEY).json(), "top": body["results"][0]["doc_id"]}


def _promote_new_model(sources: dict[str, Path], golden: Path) -> str:
    changed = _open(sources["home"], sources, golden, embedding={"model": WIDE})
    _, gate, decision = run_gate(changed, HashingEmbedder(), _encoder_for(changed.configured.embedding))
    assert decision is not None and decision.decision == "promoted", gate.reason if gate else None
    return decision.candidate_fingerprint


def test_the_watch_costs_one_query_per_interval_and_sees_a_promotion(live: ContextStore, sources: dict[str, Path], golden: Path) -> None:
    now = [0.0]
    watch = DeploymentWatch(live.engine, live.deployment.fingerprint, interval=1.0, clock=lambda: now[0])
    assert all(watch.changed() is None for _ in range(1000)) and watch.checks == 0  # within the first interval: no SQL at all
    assert not watch.due()  # the request's event loop answers serving() itself
    now[0] = 1.0
    assert watch.due() and watch.changed() is None and watch.checks == 1 and not watch.due()
    fingerprint = _promote_new_model(sources, golden)
    assert watch.changed() is None and watch.checks == 1  # promoted, but the next look is not due yet
    now[0] = 2.5
    assert watch.changed() == fingerprint and watch.checks == 2
    watch.acknowledge(fingerprint)
    now[0] = 4.0
    assert watch.changed() is None and watch.checks == 3


def test_a_running_api_switches_tables_model_and_snapshot_after_a_promotion(
    live: ContextStore, sources: dict[str, Path], golden: Path,
) -> None:
    app = create_app(store=live, encoder_for=_encoder_for)
    state: ServiceState = app.state.service
    with TestClient(app) as client:
        before = _ask(client)
        assert before["model"] == "hashing-test-embedder" and set(before["table_versions"]) == {"company_chunks", "user_state"}
        fingerprint = _promote_new_model(sources, golden)
        new_tables = {f"company_chunks__{fingerprint}", f"user_state__{fingerprint}"}

        # Requests running while the switch is noticed and prepared are each wholly old or wholly new.
        seen: list[tuple[str, frozenset[str]]] = []
        errors: list[str] = []

        def hammer() -> None:
            deadline = time.monotonic() + CHECK_S * 3
            while time.monotonic() < deadline:
                try:
                    trace = _ask(client)
                    seen.append((trace["model"], frozenset(trace["table_versions"])))
                except Exception as exc:  # a mixed request fails on the vector width
                    errors.append(repr(exc))

        threads = [threading.Thread(target=hammer) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        assert set(seen) <= {("hashing-test-embedder", frozenset({"company_chunks", "user_state"})), (WIDE, frozenset(new_tables))}

        assert state.wait_for_switch(timeout=30)
        after = _ask(client)
        assert after["model"] == WIDE and set(after["table_versions"]) == new_tables
        assert after["top"] == "company/refunds.md" and after["dense_snapshot_version"] is not None
        assert state.dense.index.company_table_name == f"company_chunks__{fingerprint}"
        serving = client.get("/readyz", headers=ADMIN).json()["checks"]["serving"]
        assert serving["fingerprint"] == fingerprint and serving["model"] == WIDE and serving["switches"] == 1
        assert serving["switch_error"] is None


def test_no_switch_before_the_interval_and_a_chunker_change_keeps_the_loaded_encoder(
    live: ContextStore, sources: dict[str, Path], golden: Path,
) -> None:
    app = create_app(store=live, embedder=HashingEmbedder())
    state: ServiceState = app.state.service
    with TestClient(app) as client:
        encoder = state.embedder
        changed = _open(sources["home"], sources, golden, chunking={"max_chars": 200})
        _, gate, decision = run_gate(changed, HashingEmbedder(), HashingEmbedder())
        assert decision is not None, gate.reason if gate else None
        assert set(_ask(client)["table_versions"]) == {"company_chunks", "user_state"}  # noticed at most once per interval
        time.sleep(CHECK_S * 1.5)
        _ask(client)  # the first request after the interval notices the promotion
        assert state.wait_for_switch(timeout=30)
        after = _ask(client)
        assert set(after["table_versions"]) == {f"company_chunks__{decision.candidate_fingerprint}", f"user_state__{decision.candidate_fingerprint}"}
        assert state.embedder is encoder and state.switches == 1


def test_a_switch_that_cannot_load_the_new_model_keeps_the_old_index_serving(
    live: ContextStore, sources: dict[str, Path], golden: Path,
) -> None:
    # A process given one fixed encoder cannot encode for another model: it must not mix them.
    app = create_app(store=live, embedder=HashingEmbedder())
    state: ServiceState = app.state.service
    with TestClient(app) as client:
        _promote_new_model(sources, golden)
        time.sleep(CHECK_S * 1.5)
        _ask(client)
        assert state.wait_for_switch(timeout=30)
        still = _ask(client)
        assert set(still["table_versions"]) == {"company_chunks", "user_state"} and still["top"] == "company/refunds.md"
        serving = client.get("/readyz", headers=ADMIN).json()["checks"]["serving"]
        assert serving["switches"] == 0 and f"cannot encode for the promoted model {WIDE}" in serving["switch_error"]


@pytest.mark.e2e
def test_the_real_query_encoder_follows_a_chunker_promotion(sources: dict[str, Path], golden: Path) -> None:
    """As `freshcontext serve` runs: the real model, the query encoder built from the config, no fakes."""
    model = SentenceTransformerEmbedder()
    store = _open(sources["home"], sources, golden, retrieval={"query_encoder": "torch"})
    ingest(store, model)
    app = create_app(store=store)
    state: ServiceState = app.state.service
    with TestClient(app) as client:
        before = _ask(client)
        assert before["model"] == "all-MiniLM-L6-v2" and set(before["table_versions"]) == {"company_chunks", "user_state"}
        changed = _open(sources["home"], sources, golden, retrieval={"query_encoder": "torch"}, chunking={"max_chars": 200})
        _, gate, decision = run_gate(changed, model, model)
        assert decision is not None, gate.reason if gate else None
        promoted_at = time.monotonic()
        while set(_ask(client)["table_versions"]) == {"company_chunks", "user_state"}:
            assert time.monotonic() - promoted_at < 30, client.get("/readyz", headers=ADMIN).json()["checks"]["serving"]
            time.sleep(0.05)
        noticed_and_switched = time.monotonic() - promoted_at
        after = _ask(client)
        fp = decision.candidate_fingerprint
        assert set(after["table_versions"]) == {f"company_chunks__{fp}", f"user_state__{fp}"} and after["model"] == "all-MiniLM-L6-v2"
        assert after["top"] == "company/refunds.md"
        assert noticed_and_switched < CHECK_S + 10, noticed_and_switched
        print(f"switch noticed and served in {noticed_and_switched:.2f}s (load {state.last_switch_s}s)")


def test_settled_serving_is_answered_without_a_look_and_none_when_a_look_is_due(live: ContextStore) -> None:
    """``/v1`` dependencies take the serving deployment on the event loop (``settled()``) unless a look
    for a promotion or a calibrator is due; then ``serving()`` runs in a worker thread and looks."""
    from service.state import CalibratorWatch

    state = ServiceState(live, embedder=HashingEmbedder())
    now = [0.0]  # both watches on one fake clock
    state._watch = DeploymentWatch(live.engine, live.deployment.fingerprint, interval=1.0, clock=lambda: now[0])
    state._calibrator_watch = CalibratorWatch(live.settings.home / "calibrator.json", interval=2.0, clock=lambda: now[0])
    assert state.settled() is state.serving()
    now[0] = 1.0
    assert state.settled() is None  # a promotion look is due
    assert state.serving() is not None and state._watch.checks == 1 and state.settled() is state.serving()
    now[0] = 2.0
    assert state.settled() is None
    checks = state._calibrator_watch.checks
    assert state.serving() is not None and state._calibrator_watch.checks == checks + 1
    assert state.settled() is state.serving()
