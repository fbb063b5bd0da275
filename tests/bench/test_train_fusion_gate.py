"""bench/train_fusion.py's write gate: new fusion weights go live only when they are at least the
current file and the best other mode on every set; ``--force`` writes and says what it overrode.

The sets are synthetic (each query's relevant chunk is its best by cosine, so ranking by cosine
is perfect); the gate, the nDCG and the writing are the script's own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import bench.train_fusion as train
from context_store.retrieve.fusion_model import FusionModel, load_fusion_model


def _set(seed: int, queries: int = 12, candidates: int = 8) -> train.SetData:
    rng = np.random.default_rng(seed)
    rows = []
    for q in range(queries):
        cos = rng.uniform(0.2, 0.9, candidates)
        rows.append({
            "cos": cos.tolist(), "text": rng.uniform(0.0, 5.0, candidates).tolist(), "mass": 10.0,
            "doc": [f"q{q}-d{i}" for i in range(candidates)],
            "label": [int(i == int(np.argmax(cos))) for i in range(candidates)], "nrel": [1],
        })
    modes = {m: float(np.mean([train.ndcg10(train.mode_scores(r, m), r) for r in rows])) for m in ("vector", "text", "rrf")}
    return train.SetData(rows, train.matrices(rows), train.coverages(rows), modes)


def _model(weight: float) -> FusionModel:
    """Ranks by the cosine gap (``weight`` > 0: best first; < 0: worst first)."""
    return FusionModel(("cos_gap",), np.zeros(1), np.ones(1), np.array([weight]), heading_weight=0.25)


@pytest.fixture
def weights_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    sets = {"a": _set(1), "b": _set(2)}
    monkeypatch.setattr(train, "load_sets", lambda work, heading_weight, names: {n: sets[n] for n in names})
    path = _model(1.0).save(tmp_path / "fusion_weights.json")
    load_fusion_model.cache_clear()  # the script reads the current file through the process's cache
    return path


def _run(monkeypatch: pytest.MonkeyPatch, path: Path, fitted: FusionModel, *flags: str) -> None:
    monkeypatch.setattr(train, "choose_gate", lambda sets, names, recipe: (0.0, fitted))
    monkeypatch.setattr(sys, "argv", ["train_fusion.py", "--sets", "a,b", "--out", str(path), "--write", *flags])
    try:
        train.main()
    finally:
        load_fusion_model.cache_clear()


def test_worse_weights_are_refused_and_the_current_file_is_kept(weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    before = weights_file.read_bytes()
    with pytest.raises(SystemExit) as refused:
        _run(monkeypatch, weights_file, _model(-1.0))
    assert "gate: not written" in str(refused.value)
    assert "< current weights" in str(refused.value) and "< best other mode" in str(refused.value)
    assert weights_file.read_bytes() == before


def test_force_writes_and_records_what_it_overrode(weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(monkeypatch, weights_file, _model(-1.0), "--force")
    written = json.loads(weights_file.read_text())
    assert written["weights"] == [-1.0]
    assert {line.split(":")[0] for line in written["provenance"]["forced_over"]} == {"a", "b"}


def test_weights_as_good_everywhere_are_written_without_an_override(weights_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _run(monkeypatch, weights_file, _model(2.0))
    written = json.loads(weights_file.read_text())
    assert written["weights"] == [2.0]
    assert "forced_over" not in written["provenance"]
    assert written["provenance"]["ndcg@10"]["a"]["learned_all_sets"] == pytest.approx(1.0)


def test_the_gate_names_each_set_and_each_reason() -> None:
    report = {
        "a": {"vector": 0.9, "text": 0.5, "rrf": 0.8, "current_file": 0.91, "learned_all_sets": 0.905},
        "b": {"vector": 0.7, "text": 0.72, "rrf": 0.71, "current_file": 0.70, "learned_all_sets": 0.73},
    }
    assert train.gate_failures(report) == ["a: 0.9050 < current weights 0.9100"]
    report["b"]["learned_all_sets"] = 0.715
    assert train.gate_failures(report) == ["a: 0.9050 < current weights 0.9100", "b: 0.7150 < best other mode 0.7200"]
