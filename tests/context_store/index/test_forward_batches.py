"""How the ONNX encoder cuts texts into forward passes: similar lengths together, never a short text padded far."""

from __future__ import annotations

import itertools
import random

import pytest

from context_store.index.embed.onnx_backend import forward_batches, pass_cost


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
