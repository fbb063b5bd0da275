"""Coalescing concurrent calls into one batched call, without waiting for a batch to fill.

An API process serves several requests at once, and two of their steps are far cheaper per
item in a batch than one at a time: encoding a query (the network's matrix products are
skinny for one 12-token query) and the first stage of the dense search (one pass over the
projected matrix serves every query in the batch; a pass per query is memory-bound).

``Coalescer(fn)`` makes ``fn(items) -> results`` callable one item at a time from many
threads. The first caller runs ``fn`` at once on its own item; callers arriving while it
runs queue, and when it finishes the oldest of them runs everything queued in one call. No
caller ever waits for a batch to fill, so a lone request pays nothing, and under load the
batch is whatever arrived during the previous call.

A waiting caller blocks on a lock of its own, taken for it when it queues and released by
whoever finishes its item (or hands it the next batch): one C call each way, where an
``Event`` costs a ``Condition``, its waiter list and a second lock per call (the hand-off was
~2 % of an API worker's samples). A caller that runs at once allocates no lock at all.

One bad item fails alone: when a batched call raises, each of its items is run again on its
own, so a query the tokenizer refuses (an unpaired surrogate, say) fails its own caller and
every other caller of that batch still gets its result.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("error", "gate", "item", "lead", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.result: R | None = None
        self.error: BaseException | None = None
        self.lead = False
        self.gate: Any = None  # a waiting caller's lock, held until its slot is settled or made lead

    def wake(self) -> None:
        self.gate.release()


class Coalescer(Generic[T, R]):
    """Calls ``fn`` with the items of concurrent callers together (at most ``max_batch``)."""

    def __init__(self, fn: Callable[[list[T]], Sequence[R]], *, max_batch: int = 16) -> None:
        self._fn = fn
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[_Slot[T, R]] = []
        self._busy = False
        self.calls = 0
        self.items = 0

    def __call__(self, item: T) -> R:
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._pending.append(slot)
            lead = not self._busy
            self._busy = True
            if not lead:  # taken before anyone can see the slot queued, so no release comes first
                slot.gate = threading.Lock()
                slot.gate.acquire()
        if not lead:
            slot.gate.acquire()  # until released by whoever settles this slot or hands it the next batch
            if not slot.lead:  # done by another caller's batch
                if slot.error is not None:
                    raise slot.error
                return slot.result  # type: ignore[return-value]
        # Leading: this slot is the oldest pending one, so it is in the batch taken here.
        with self._lock:
            batch = self._pending[: self.max_batch]
            del self._pending[: self.max_batch]
        try:
            self._settle(batch)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].error = exc
            else:
                self._apart(batch)
        except BaseException as exc:  # an interrupt: every caller in the batch gets it, none hangs
            for s in batch:
                s.error = exc
        with self._lock:
            self.calls += 1
            self.items += len(batch)
            if self._pending:
                nxt = self._pending[0]
                nxt.lead = True
                nxt.wake()  # the oldest waiting caller runs the next batch
            else:
                self._busy = False
        for s in batch:
            if s is not slot:
                s.wake()
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]

    def _settle(self, batch: list[_Slot[T, R]]) -> None:
        results = self._fn([s.item for s in batch])
        if len(results) != len(batch):
            raise RuntimeError(f"batched call returned {len(results)} results for {len(batch)} items")
        for s, r in zip(batch, results):
            s.result = r

    def _apart(self, batch: list[_Slot[T, R]]) -> None:
        """After a failed batch: each item on its own, so only the items that fail get an error."""
        for s in batch:
            try:
                self._settle([s])
            except Exception as exc:
                s.error = exc

    @property
    def mean_batch(self) -> float:
        return self.items / self.calls if self.calls else 0.0
