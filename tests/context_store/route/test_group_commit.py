"""Group commit (``context_store.route.recording``): concurrent units share a transaction, each
caller returns after its rows committed, and a failing unit fails only its own caller."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text

from context_store.route.recording import GroupCommit, Writes
from context_store.store.database import get_engine


def test_concurrent_units_share_transactions_and_fail_alone(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE items (name TEXT PRIMARY KEY)"))
    writer = GroupCommit(engine)
    gate = threading.Event()

    def unit(name: str):  # type: ignore[no-untyped-def]
        def work(writes: Writes) -> str:
            if name == "first":
                gate.wait(5)  # hold the first transaction open so the others queue behind it
            if name == "bad":
                raise ValueError("bad unit")
            writes.execute(text("INSERT INTO items VALUES (:n)"), {"n": name})
            return name.upper()
        return work

    def call(name: str) -> str:
        try:
            out = writer.run(unit(name))
        except ValueError as exc:
            return f"error: {exc}"
        with engine.connect() as conn:  # committed by the time run() returns
            assert conn.execute(text("SELECT count(*) FROM items WHERE name = :n"), {"n": name}).scalar() == 1
        return out

    names = ["first", *[f"n{i}" for i in range(10)], "bad"]
    with ThreadPoolExecutor(len(names)) as pool:
        futures = [pool.submit(call, names[0])]
        time.sleep(0.2)
        futures += [pool.submit(call, n) for n in names[1:]]
        time.sleep(0.2)
        gate.set()
        results = [f.result() for f in futures]
    assert results == ["FIRST", *[f"N{i}" for i in range(10)], "error: bad unit"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM items")).scalar() == 11
    assert writer.mean_batch > 1.0  # the ten that queued behind the first shared transactions


def test_a_lone_unit_raises_as_it_is(tmp_path: Path) -> None:
    writer = GroupCommit(get_engine(f"sqlite:///{tmp_path / 'db.sqlite'}"))
    with pytest.raises(KeyError):
        writer.run(lambda writes: {}["missing"])
