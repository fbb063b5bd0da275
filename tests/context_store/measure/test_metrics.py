"""Retrieval and calibration metrics against hand-computed values (trec_eval / BEIR definitions)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from context_store.measure.ir_metrics import evaluate_run, expected_calibration_error, mrr_at_k, ndcg_at_k, recall_at_k

RANKED = ["d1", "d2", "d3", "d4"]
REL = {"d2": 1, "d4": 2, "d5": 1, "d9": 0}


def test_ndcg_hand_computed() -> None:
    # DCG@3 = 1/log2(3); IDCG@3 = 2/log2(2) + 1/log2(3) + 1/log2(4)
    idcg3 = 2 + 1 / math.log2(3) + 0.5
    assert ndcg_at_k(RANKED, REL, 3) == pytest.approx((1 / math.log2(3)) / idcg3)
    assert ndcg_at_k(RANKED, REL, 3) == pytest.approx(0.201516, abs=1e-6)
    # DCG@4 adds 2/log2(5); only three documents are relevant, so IDCG@4 = IDCG@3
    assert ndcg_at_k(RANKED, REL, 4) == pytest.approx((1 / math.log2(3) + 2 / math.log2(5)) / idcg3)
    assert ndcg_at_k(["d4", "d2", "d5"], REL, 3) == pytest.approx(1.0)
    assert ndcg_at_k(["x"], {"a": 0}, 10) == 0.0


def test_recall_and_mrr_hand_computed() -> None:
    assert recall_at_k(RANKED, REL, 3) == pytest.approx(1 / 3)
    assert recall_at_k(RANKED, REL, 4) == pytest.approx(2 / 3)
    assert mrr_at_k(RANKED, REL, 1) == 0.0
    assert mrr_at_k(RANKED, REL, 3) == pytest.approx(0.5)
    # a document repeated in a run is counted once, at its first rank
    assert recall_at_k(["d2", "d2", "d2", "d4"], REL, 3) == pytest.approx(2 / 3)  # duplicates collapse first
    with pytest.raises(ValueError):
        ndcg_at_k(RANKED, REL, 0)


def test_ece_hand_computed() -> None:
    conf = [0.1, 0.4, 0.45, 0.9, 1.0]
    hits = [0, 1, 0, 1, 1]
    # bins: [0.1] acc 0 conf .1 -> .1*1/5; [.4,.45] acc .5 conf .425 -> .075*2/5; [.9,1.0] acc 1 conf .95 -> .05*2/5
    assert expected_calibration_error(conf, hits) == pytest.approx(0.02 + 0.03 + 0.02)
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0
    assert expected_calibration_error([0.0, 0.0], [1, 1]) == 1.0
    with pytest.raises(ValueError):
        expected_calibration_error([1.2], [1])


def test_ece_rejects_out_of_range_confidence_and_names_it() -> None:
    # one ECE for the whole project: a confidence outside [0, 1] is a bug upstream, never clipped
    for bad in (-0.2, 1.0000001, float("nan")):
        with pytest.raises(ValueError, match=r"item 1\) is outside \[0, 1\]"):
            expected_calibration_error([0.5, bad, 0.7], [1, 0, 1])
    # numpy input at the edges is fine (routing evaluation passes arrays)
    assert expected_calibration_error(np.array([0.0, 1.0]), np.array([False, True])) == 0.0
    # a score that is not a probability (a cosine can be negative) is mapped by its caller
    raw = np.array([-0.3, 0.2, 0.9])
    assert expected_calibration_error(np.clip(raw, 0.0, 1.0), [0, 0, 1]) == pytest.approx((0.0 + 0.2 + 0.1) / 3)


def test_evaluate_run_skips_unjudged_queries() -> None:
    qrels = {"q1": REL, "q2": {"a": 1}, "q3": {"b": 0}}
    run = {"q1": RANKED, "q2": ["a"]}
    out = evaluate_run(run, qrels, ks=(3,))
    assert out["queries"] == 2
    assert out["ndcg@3"] == pytest.approx((0.201516 + 1.0) / 2, abs=1e-6)
    assert out["mrr@3"] == pytest.approx((0.5 + 1.0) / 2)
