"""bench/warm_scale.py on two tiny corpora: every edit is applied and each figure comes from a timed apply."""

from __future__ import annotations

import json

import pytest

from bench import warm_scale
from context_store.store import vector_index


def test_the_benchmark_applies_every_edit_and_reports_both_corpora(capsys: pytest.CaptureFixture[str]) -> None:
    replace = vector_index.VectorIndex._replace
    assert warm_scale.main(["--small", "12", "--large", "60", "--edits", "4", "--warmup", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["small"]["documents"], out["large"]["documents"]) == (12, 60)
    assert out["large"]["rows"] > out["small"]["rows"] >= 12
    for size in ("small", "large"):
        assert 0 < out[size]["lancedb_commit_median_ms"] < out[size]["apply_median_ms"] <= out[size]["apply_p95_ms"]
    assert out["large_vs_small"] > 0
    assert vector_index.VectorIndex._replace is replace  # its timing wrapper is gone


def test_more_warmup_than_edits_is_refused() -> None:
    with pytest.raises(SystemExit):
        warm_scale.main(["--edits", "2", "--warmup", "2"])
