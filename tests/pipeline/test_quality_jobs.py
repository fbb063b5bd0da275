"""The index change sensor on a real home and a real Dagster instance: a config change makes one gated promotion run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import dagster as dg
import numpy as np
import pytest

from assets.resources import StoreResource
from context_store.index.candidate import candidate_store
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.settings import EmbeddingConfig, Settings
from context_store.store.context_store import ContextStore
from pipeline.definitions import build_defs
from pipeline.jobs import QUALITY_ASSETS, index_promotion_job, serving_quality_job
from pipeline.sensors import index_change_sensor

GOLDEN = [
    {"id": "g1", "text": "refund window days delivery", "answerable": True, "expected_doc_ids": ["company/refunds.md"]},
    {"id": "g2", "text": "download invoices pdf billing history", "answerable": True, "expected_doc_ids": ["company/billing/invoices.md"]},
    {"id": "g3", "text": "how to ask for a refund in orders", "answerable": True, "expected_doc_ids": ["company/refunds.md"]},
]

defs = build_defs()  # the default cadence


class _Scrambled(HashingEmbedder):
    """A 'model' whose vectors have nothing to do with the texts: the candidate it builds must be rejected."""

    def encode(self, texts: list[str]) -> np.ndarray:
        seeds = [int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in texts]
        out = np.stack([np.random.default_rng(s).standard_normal(self.dim) for s in seeds]).astype(np.float32)
        return out / np.linalg.norm(out, axis=1, keepdims=True)


class _EmptiedAfterBuild(HashingEmbedder):
    """Builds a good candidate, then empties its table when the gate starts asking questions (a table emptied under it)."""

    def __init__(self, home: Path, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.home = home

    def encode(self, texts: list[str]) -> np.ndarray:
        if any(t == q["text"] for t in texts for q in GOLDEN):
            cand = candidate_store(ContextStore.open(self.home))
            table = cand.index.table(cand.index.company_table_name)
            if table is not None and table.count_rows():
                table.delete("true")
        return super().encode(texts)


class _Embedders:
    def __init__(self, home: Path) -> None:
        self.home = home

    def for_store(self, store: ContextStore) -> HashingEmbedder:
        # the serving model, as EmbedderResource loads it; never a fake under the real model's name
        # (the process caches vectors by model name, see routing._EXAMPLES)
        model = store.settings.embedding.model
        return HashingEmbedder() if model == EmbeddingConfig().model else HashingEmbedder(name=model)

    def for_config(self, config: EmbeddingConfig, home: Path | None = None) -> HashingEmbedder:
        if config.model.startswith("broken"):
            return _Scrambled(name=config.model)
        if config.model.startswith("emptied"):
            return _EmptiedAfterBuild(self.home, name=config.model)
        return HashingEmbedder(name=config.model)


@pytest.fixture
def home(store: ContextStore, sources: dict[str, Path], tmp_path: Path) -> Path:
    golden = tmp_path / "golden.jsonl"
    golden.write_text("\n".join(json.dumps(q) for q in GOLDEN) + "\n")
    for topic in ("lamps", "gift cards", "passwords", "shipping", "warranty", "loyalty points", "student discount", "careers"):
        (sources["company"] / f"{topic.replace(' ', '-')}.md").write_text(f"# {topic.title()}\n\nEverything about {topic} at Lumora.\n")
    ingest(store, HashingEmbedder())
    Settings.load(store.settings.home, **{
        "company_sources": [s.model_dump() for s in store.settings.company_sources],
        "user_sources": [s.model_dump() for s in store.settings.user_sources],
        "retrieval": {"mode": "vector"},  # the rejection below must come from the vectors, not be rescued by full-text search
        "quality": {"golden_sets": [{"name": "mini", "path": str(golden)}], "ndcg_floor": 0.3, "recall_floor": 0.3, "mrr_floor": 0.3},
    }).save()
    return store.settings.home


def _configure(home: Path, model: str) -> None:
    """What an operator does: edit the embedding model in freshcontext.yaml."""
    settings = Settings.load(home)
    settings.embedding.model = model
    settings.save()


def _tick(home: Path, instance: dg.DagsterInstance) -> dg.RunRequest | dg.SkipReason:
    # a new resource per tick, as the sensor daemon builds one: it reads the config file as it is now
    context = dg.build_sensor_context(resources={"store": StoreResource(home=str(home))}, instance=instance)
    return index_change_sensor(context)


def _run(home: Path, request: dg.RunRequest, instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    job = dg.Definitions(
        assets=QUALITY_ASSETS, jobs=[index_promotion_job, serving_quality_job],
        resources={"store": StoreResource(home=str(home)), "embedder": dg.ResourceDefinition.hardcoded_resource(_Embedders(home))},
    ).resolve_job_def(request.job_name or index_promotion_job.name)
    return job.execute_in_process(instance=instance, tags=request.tags, raise_on_error=False)


def test_the_sensor_is_on_by_default_and_targets_the_promotion_job() -> None:
    sensor = defs.resolve_sensor_def("index_change_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    assert {t.job_name for t in sensor.targets} == {"index_promotion_job", "serving_quality_job"}
    assert {k.path[-1] for k in defs.resolve_job_def("index_promotion_job").asset_layer.executable_asset_keys} == {"index_candidate", "index_promotion"}


def test_a_config_change_requests_one_run_that_promotes(home: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    assert "configured model and chunker serve" in _tick(home, instance).skip_message

    _configure(home, "hashing-v2")
    request = _tick(home, instance)
    assert isinstance(request, dg.RunRequest), request
    wanted = Settings.load(home).index_code_version()
    assert request.tags["freshcontext/candidate_fingerprint"] == wanted and request.run_key.endswith(f"-to-{wanted}")
    assert _tick(home, instance).run_key == request.run_key  # the same change, the same key: Dagster launches it once

    result = _run(home, request, instance)
    assert result.success
    promoted = {k: v.value for k, v in result.asset_materializations_for_node("index_promotion")[-1].metadata.items()}
    assert promoted["decision"] == "promoted" and promoted["serving_fingerprint"] == wanted
    assert ContextStore.open(home).index.company_table_name == f"company_chunks__{wanted}"

    # the promoted index is measured at once, not at the next scheduled run
    measure = _tick(home, instance)
    assert isinstance(measure, dg.RunRequest) and measure.job_name == "serving_quality_job", measure
    measured = _run(home, measure, instance)
    assert measured.success
    quality = {k: v.value for k, v in measured.asset_materializations_for_node("retrieval_quality")[-1].metadata.items()}
    assert quality["index_fingerprint"] == wanted and quality["model"] == "hashing-v2"
    assert "configured model and chunker serve" in _tick(home, instance).skip_message

    # changing back is a new change in a new serving period: a new key, not deduplicated away
    _configure(home, "all-MiniLM-L6-v2")
    back = _tick(home, instance)
    assert isinstance(back, dg.RunRequest) and back.run_key != request.run_key


def test_a_change_waits_while_a_candidate_build_is_running(home: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _configure(home, "hashing-v2")
    for job in (index_promotion_job, defs.resolve_job_def("quality_job"), serving_quality_job):
        run = instance.create_run_for_job(defs.resolve_job_def(job.name), status=dg.DagsterRunStatus.STARTED)
        skipped = _tick(home, instance)
        assert isinstance(skipped, dg.SkipReason) and f"waits for the running {job.name}" in skipped.skip_message
        instance.report_run_canceled(run)
    assert isinstance(_tick(home, instance), dg.RunRequest)


def test_a_rejected_candidate_is_not_requested_again(home: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _configure(home, "broken-model")
    request = _tick(home, instance)
    assert isinstance(request, dg.RunRequest)
    result = _run(home, request, instance)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["candidate_at_least_as_good"] is False
    assert not result.asset_materializations_for_node("index_promotion")  # the blocking check stopped the promotion
    assert ContextStore.open(home).index.company_table_name == "company_chunks"
    skipped = _tick(home, instance)
    assert isinstance(skipped, dg.SkipReason) and "was rejected" in skipped.skip_message


def test_a_candidate_table_emptied_before_the_gate_fails_the_blocking_check_and_is_not_promoted(home: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    _configure(home, "emptied-model")
    result = _run(home, _tick(home, instance), instance)
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert evaluations["candidate_at_least_as_good"].passed is False
    assert "current documents missing" in (evaluations["candidate_at_least_as_good"].description or "")
    assert not result.asset_materializations_for_node("index_promotion")  # blocked, not merely declined
    store = ContextStore.open(home)
    assert store.index.company_table_name == "company_chunks" and store.index.count("company_chunks") > 0
