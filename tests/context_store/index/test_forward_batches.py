"""How the ONNX encoder cuts texts into forward passes: similar lengths together, never a short text padded far."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from context_store.index.embed.onnx_backend import forward_batches, pass_cost, spread_passes


def _cost(lengths: list[int], passes: list[list[int]]) -> float:
    return sum(pass_cost(len(p), max(lengths[i] for i in p)) for p in passes)


@pytest.mark.parametrize("seed", range(20))
def test_every_text_runs_once_in_a_pass_of_neighbours_in_length(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(3, 256) for _ in range(rng.randint(1, 40))]
    most = rng.choice([1, 3, 8, 16])
    passes = [list(p) for p in forward_batches(lengths, most)]
    assert sorted(i for p in passes for i in p) == list(range(len(lengths)))
    assert all(1 <= len(p) <= most for p in passes)
    # each pass is a run of the longest-first order: no pass straddles another's lengths
    spans = [(min(lengths[i] for i in p), max(lengths[i] for i in p)) for p in passes]
    assert all(low_a >= high_b for (low_a, _), (_, high_b) in itertools.pairwise(spans))
    # never dearer than the fixed batches of ``most`` texts in length order the encoder ran before
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    fixed = [order[k : k + most] for k in range(0, len(order), most)]
    assert _cost(lengths, passes) <= _cost(lengths, fixed) + 1e-9


def test_similar_lengths_share_a_pass_and_a_short_text_is_not_padded_to_a_long_one() -> None:
    assert [sorted(p.tolist()) for p in forward_batches([20, 18, 12, 15], 8)] == [[0, 1, 2, 3]]
    assert [p.tolist() for p in forward_batches([12, 256], 8)] == [[1], [0]]
    # a wave of the Plausible replay: five chunks padded to 256 cost 1.6 x their own tokens
    cut = [set(p.tolist()) for p in forward_batches([256, 240, 131, 98, 82], 8)]
    assert not any({0, 1} & p and {2, 3, 4} & p for p in cut)
    assert len(cut) < 5  # and the short ones still share passes


def test_the_most_per_pass_holds_and_nothing_in_nothing_out() -> None:
    sizes = [len(p) for p in forward_batches([64] * 20, 8)]
    assert len(sizes) == 3 and max(sizes) <= 8
    assert forward_batches([], 8) == []
    # batch_size may be large (up to 4096): the passes stay at 64 texts, where a pass's start-up is < 5 %
    assert max(len(p) for p in forward_batches([100] * 300, 4096)) == 64


def _busiest(lengths: list[int], order: list[list[int]], workers: int) -> float:
    loads = [0.0] * workers
    for p in order:
        loads[loads.index(min(loads))] += pass_cost(len(p), max(lengths[i] for i in p))
    return max(loads)


@pytest.mark.parametrize("seed", range(20))
def test_spread_passes_keep_every_text_once_dearest_first_and_cut_only_what_shortens_the_busiest_worker(seed: int) -> None:
    rng = random.Random(seed)
    lengths = [rng.randint(3, 256) for _ in range(rng.randint(1, 40))]
    workers = rng.choice([2, 3, 4])
    spread = [list(p) for p in spread_passes(forward_batches(lengths, rng.choice([1, 8, 16])), lengths, workers)]
    assert sorted(i for p in spread for i in p) == list(range(len(lengths)))
    costs = [pass_cost(len(p), max(lengths[i] for i in p)) for p in spread]
    assert costs == sorted(costs, reverse=True)
    # no worker idles while a pass of several texts could be shared, and cutting the dearest again would not help
    assert len(spread) >= min(workers, len(lengths)) or len(spread[0]) == 1
    if len(spread[0]) > 1:
        half = (len(spread[0]) + 1) // 2
        again = [spread[0][:half], spread[0][half:], *spread[1:]]
        again.sort(key=lambda p: -pass_cost(len(p), max(lengths[i] for i in p)))
        assert _busiest(lengths, again, workers) > _busiest(lengths, spread, workers)
    # a cut pass keeps its rows in length order: each half is a run of longest-first
    assert all(lengths[a] >= lengths[b] for p in spread for a, b in itertools.pairwise(p))


def test_one_pass_is_cut_so_that_every_worker_has_work_and_a_single_text_is_left_whole() -> None:
    lengths = [40, 38, 35, 30, 30, 29, 28, 25]
    halves = spread_passes([np.arange(8)], lengths, 2)
    assert len(halves) == 2 and sorted(len(p) for p in halves) == [4, 4]
    assert [p.tolist() for p in spread_passes(forward_batches([200], 8), [200], 2)] == [[0]]
    assert spread_passes([], [], 2) == []
