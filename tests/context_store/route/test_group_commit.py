"""Group commit (``context_store.route.recording``): concurrent units share a transaction, each
caller returns after its rows committed, and a failing unit fails only its own caller."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
from sqlalchemy import func, select, text, update
from sqlalchemy.exc import IntegrityError

from context_store.route.recording import GroupCommit, Writes, writes_scope
from context_store.store.database import get_engine
from context_store.store.models import QuestionAsk, RoutedQuestion


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


def _question(question_id: str) -> dict:  # type: ignore[type-arg]
    now = datetime.now(timezone.utc)
    return {"question_id": question_id, "status": "open", "kind": "escalation", "text": "t", "reasons": [], "context": [],
            "user_state": [], "model": "m", "vector": b"", "ask_count": 1, "created_at": now, "updated_at": now}


def test_writes_keep_rows_until_a_statement_needs_them_and_write_parents_first(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")  # foreign keys are enforced
    questions, asks = RoutedQuestion.__table__, QuestionAsk.__table__  # type: ignore[attr-defined]
    with writes_scope(engine) as writes:
        writes.add(asks, {"question_id": "q-1", "text": "t", "reasons": [], "asked_at": datetime.now(timezone.utc)})
        writes.add(questions, _question("q-1"))  # added after the ask that names it: written before it
        with engine.connect() as other:
            assert other.execute(select(func.count()).select_from(questions)).scalar() == 0  # kept, not written yet
        # an UPDATE of the questions sees the kept question (as a join to one queued in the same batch must)
        joined = writes.execute(update(questions).where(questions.c.question_id == "q-1")
                                .values(ask_count=questions.c.ask_count + 1).returning(questions.c.ask_count)).first()
        assert joined is not None and joined[0] == 2
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(asks)).scalar() == 1


def test_a_row_that_fails_at_the_batch_end_fails_only_its_own_unit(tmp_path: Path) -> None:
    engine = get_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    questions = RoutedQuestion.__table__  # type: ignore[attr-defined]
    with writes_scope(engine) as writes:
        writes.add(questions, _question("q-taken"))
    writer = GroupCommit(engine)
    leading, gate = threading.Event(), threading.Event()

    def unit(question_id: str):  # type: ignore[no-untyped-def]
        def work(writes: Writes) -> str:
            if question_id == "q-first":
                leading.set()
                gate.wait(5)
            writes.add(questions, _question(question_id))  # the duplicate fails at the flush, after every unit ran
            return question_id
        return work

    def call(question_id: str) -> str:
        try:
            return writer.run(unit(question_id))
        except IntegrityError:
            return "duplicate"

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(call, "q-first")]
        assert leading.wait(5)  # q-first commits alone and holds the writer
        futures += [pool.submit(call, q) for q in ("q-a", "q-taken", "q-b")]
        deadline = time.monotonic() + 5
        while len(writer._batch._pending) < 3 and time.monotonic() < deadline:  # the three queue behind it
            time.sleep(0.001)
        assert len(writer._batch._pending) == 3  # so the three commit as one batch
        gate.set()
        results = [f.result() for f in futures]
    assert results == ["q-first", "q-a", "duplicate", "q-b"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(questions)).scalar() == 4
