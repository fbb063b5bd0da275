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


def _queued_behind_a_running_call(fn, items: list[int]):  # type: ignore[no-untyped-def]
    """Run ``items`` through a Coalescer so that all of them form one batch behind a first call of 0."""
    gate = threading.Event()
    batches: list[list[int]] = []

    def gated(batch: list[int]) -> list[int]:
        batches.append(list(batch))
        if len(batches) == 1:
            assert gate.wait(5)
        return fn(batch)

    co = Coalescer(gated)
    pool = ThreadPoolExecutor(len(items) + 1)
    first = pool.submit(co, 0)
    time.sleep(0.05)
    futures = [pool.submit(co, i) for i in items]
    deadline = time.monotonic() + 5
    while len(co._pending) < len(items) and time.monotonic() < deadline:
        time.sleep(0.01)
    gate.set()
    return co, pool, first, futures, batches


def test_one_bad_item_fails_alone_and_the_rest_of_its_batch_get_their_results() -> None:
    def refuse_negatives(items: list[int]) -> list[int]:
        if any(i < 0 for i in items):
            raise ValueError(f"bad item in {items}")
        return [i * 10 for i in items]

    co, pool, first, futures, batches = _queued_behind_a_running_call(refuse_negatives, [1, -2, 3, 4])
    with pool:
        assert first.result(5) == 0
        with pytest.raises(ValueError, match=r"bad item in \[-2\]"):  # its own error, from its own call
            futures[1].result(5)
        assert [futures[i].result(5) for i in (0, 2, 3)] == [10, 30, 40]
    assert sorted(batches[1]) == [-2, 1, 3, 4]  # they did form one batch, which failed as a whole
    assert co(9) == 90 and not co._busy


def test_a_failing_call_of_one_item_reaches_its_caller_and_the_next_call_still_works() -> None:
    calls = 0

    def fail_first(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError(f"bad batch {items}")
        return items

    echo = Coalescer(fail_first)
    with pytest.raises(ValueError, match="bad batch"):
        echo(1)
    assert echo(9) == 9


def test_an_unpaired_surrogate_in_a_coalesced_batch_of_the_real_encoder_fails_only_its_own_query(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The ONNX tokenizer raises on a lone surrogate for the whole batch; the other questions still get vectors."""
    from context_store.index.embed.onnx_backend import onnx_encoder
    from context_store.index.embed.query_encoder import CoalescingEncoder

    inner = onnx_encoder("all-MiniLM-L6-v2", tmp_path)
    gate, calls = threading.Event(), []

    class Gated:
        name, dim = inner.name, inner.dim

        def encode(self, texts):  # type: ignore[no-untyped-def]
            calls.append(list(texts))
            if len(calls) == 1:
                assert gate.wait(10)
            return inner.encode(texts)

    encoder = CoalescingEncoder(Gated())  # type: ignore[arg-type]
    good = ["how do refunds work", "where is my order", "change my address", "cancel my plan"]
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(encoder.encode, ["warm up"])
        time.sleep(0.05)
        bad = pool.submit(encoder.encode, ["refund \ud800 please"])
        rest = [pool.submit(encoder.encode, [q]) for q in good]
        deadline = time.monotonic() + 5
        while len(encoder._batch._pending) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        assert first.result(10).shape == (1, inner.dim)
        vectors = [f.result(10) for f in rest]
        with pytest.raises(TypeError):  # the tokenizer's own error, for this caller alone
            bad.result(10)
    assert len(calls[1]) == 5  # the bad question and the four good ones were one batch
    for q, v in zip(good, vectors):
        assert abs(float(v[0] @ inner.encode([q])[0]) - 1.0) < 1e-4


def test_a_wrong_number_of_results_is_an_error_not_a_hang() -> None:
    broken = Coalescer(lambda items: [])
    with pytest.raises(RuntimeError, match="0 results for 1 items"):
        broken(1)
    assert not broken._busy


def test_many_callers_each_get_their_own_result_and_none_is_left_waiting() -> None:
    """The hand-off under churn: callers queue, lead and finish in every order; each returns its own item's result."""
    def echo(items: list[int]) -> list[int]:
        time.sleep(0.0002 * (len(items) % 3))  # batches of varied length and duration
        return [-i for i in items]

    co = Coalescer(echo, max_batch=5)
    with ThreadPoolExecutor(16) as pool:
        got = list(pool.map(co, range(3000), timeout=60))
    assert got == [-i for i in range(3000)] and not co._busy and not co._pending
    assert co.items == 3000 and co.mean_batch > 1.0
