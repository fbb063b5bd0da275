"""Coalescing concurrent calls: batches form under concurrency, a lone call is not held, errors reach every caller."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from context_store.index.embed.coalesce import Coalescer


def test_a_lone_call_runs_at_once_on_its_own_item() -> None:
    seen: list[list[int]] = []
    double = Coalescer(lambda items: (seen.append(list(items)), [i * 2 for i in items])[1])
    assert [double(i) for i in range(3)] == [0, 2, 4]
    assert seen == [[0], [1], [2]]


def test_calls_arriving_during_a_batch_run_together_next_and_each_gets_its_own_result() -> None:
    started = threading.Event()
    release = threading.Event()
    batches: list[list[int]] = []

    def slow_square(items: list[int]) -> list[int]:
        batches.append(list(items))
        if len(batches) == 1:
            started.set()
            assert release.wait(5)
        return [i * i for i in items]

    square = Coalescer(slow_square, max_batch=4)
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(square, 1)
        assert started.wait(5)
        rest = [pool.submit(square, i) for i in range(2, 8)]
        deadline = time.monotonic() + 5
        while len(square._pending) < 6 and time.monotonic() < deadline:  # all six queued behind the first call
            time.sleep(0.01)
        release.set()
        assert first.result(5) == 1 and [f.result(5) for f in rest] == [i * i for i in range(2, 8)]
    assert batches[0] == [1]
    assert sorted(batches[1]) == batches[1] and len(batches[1]) == 4 and sorted(sum(batches[1:], [])) == list(range(2, 8))
    assert square.calls == 3 and square.mean_batch == pytest.approx(7 / 3)


def test_an_error_reaches_every_caller_of_the_batch_and_the_next_call_still_works() -> None:
    gate = threading.Event()
    calls = 0

    def fail_second(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            assert gate.wait(5)
            return items
        if calls == 2:
            raise ValueError(f"bad batch {items}")
        return items

    echo = Coalescer(fail_second)
    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(echo, 0)
        time.sleep(0.05)
        waiting = [pool.submit(echo, i) for i in (1, 2)]
        deadline = time.monotonic() + 5
        while len(echo._pending) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        assert first.result(5) == 0
        for f in waiting:
            with pytest.raises(ValueError, match="bad batch"):
                f.result(5)
    assert echo(9) == 9


def test_a_wrong_number_of_results_is_an_error_not_a_hang() -> None:
    broken = Coalescer(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        broken(1)
    assert not broken._busy
