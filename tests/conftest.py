"""Shared fixtures: a home under tmp_path with one company and one user source."""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# one ONNX export of the model for every test home (and the processes tests start), not one per tmp_path
os.environ.setdefault("FRESHCONTEXT_MODELS_DIR", os.path.join(tempfile.gettempdir(), "freshcontext-test-models"))

from context_store.index.embed.fake import HashingEmbedder  # noqa: E402
from context_store.store.context_store import ContextStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

REFUNDS_V1 = """---
title: Refund policy
---
# Refund policy

We want you to be happy with every Lumora purchase.

## Refund window

You can ask for a refund within 30 days of delivery.

## How to ask

Open Settings, then Orders, and choose Request refund.
"""


@pytest.fixture
def sources(tmp_path: Path, backend: dict[str, Any]) -> dict[str, Path]:
    company = tmp_path / "company"
    users = tmp_path / "users"
    (company / "billing").mkdir(parents=True)
    users.mkdir()
    (company / "refunds.md").write_text(REFUNDS_V1)
    (company / "billing" / "invoices.md").write_text(
        "# Invoices\n\n## Download\n\nInvoices are under Billing, then History, as PDF files.\n"
    )
    (users / "u-1.json").write_text(
        '{"user_id": "u-1", "captured_at": "2026-11-20T10:00:00Z", "account": {"status": "active", "plan": "Plus"},'
        ' "orders": [{"order_id": "A-1", "status": "shipped", "carrier": "DHL"}]}'
    )
    (users / "u-2.json").write_text(
        '{"user_id": "u-2", "captured_at": "2026-11-20T10:00:00Z", "account": {"status": "locked", "plan": "Free"}}'
    )
    home = tmp_path / "home"
    if backend["config"]:  # the storage choice is configuration alone, as for a user
        home.mkdir()
        (home / "freshcontext.yaml").write_text(yaml.safe_dump(backend["config"]))
    return {"company": company, "users": users, "home": home}


def open_on_sources(sources: dict[str, Path], **settings: Any) -> ContextStore:
    """The ``sources`` home reading its company and users folders, with ``settings`` on top."""
    return ContextStore.open(
        sources["home"],
        company_sources=[{"name": "company", "path": str(sources["company"])}],
        user_sources=[{"name": "users", "path": str(sources["users"])}],
        **settings,
    )


@pytest.fixture
def store(sources: dict[str, Path]) -> ContextStore:
    return open_on_sources(sources)


def open_with_staff_answers(sources: dict[str, Path], **settings: Any) -> ContextStore:
    """The ``sources`` home plus a staff-answer source beside the company folder (the learning loop's)."""
    staff = sources["company"].parent / "staff_answers"
    staff.mkdir()
    return ContextStore.open(
        sources["home"],
        company_sources=[{"name": "company", "path": str(sources["company"])}, {"name": "staff", "path": str(staff), "kind": "staff_answer"}],
        user_sources=[{"name": "users", "path": str(sources["users"])}],
        **settings,
    )


def raised_inside(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The ``kind`` error inside what was raised: async clients (the MCP SDK's) wrap it in exception groups."""
    if isinstance(exc, kind):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = raised_inside(inner, kind)
        if found is not None:
            return found
    return raised_inside(exc.__context__, kind) if exc.__context__ is not None else None


@pytest.fixture
def fake_embedder() -> HashingEmbedder:
    return HashingEmbedder()


# --- scaleout: the same tests on PostgreSQL + LanceDB on S3 ---
# A module opts in with ``pytestmark = pytest.mark.all_backends``; its tests that use
# ``sources``/``store`` then run once per backend. The servers are started once per session,
# each test gets its own database and its own S3 prefix.

BACKENDS = ["local", pytest.param("postgres-s3", marks=pytest.mark.scaleout)]
_names = itertools.count()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    explicit = any(m.args and m.args[0] == "backend" for m in metafunc.definition.iter_markers("parametrize"))
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("all_backends") and not explicit:
        metafunc.parametrize("backend", BACKENDS, indirect=True)


def _unavailable(reason: str) -> None:
    # CI installs PostgreSQL and moto (.ci/run): there a missing server is a failure, never a skip
    if os.environ.get("CI"):
        pytest.fail(f"scale-out servers are required in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Any]:
    from tests.scaleout.servers import ServerUnavailable, start_postgres

    try:
        server = start_postgres()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Any]:
    from tests.scaleout.servers import ServerUnavailable, start_s3

    try:
        server = start_s3()
    except ServerUnavailable as exc:
        _unavailable(str(exc))
    server.create_bucket("freshcontext-tests")
    yield server
    server.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """``config``: the freshcontext.yaml keys selecting the stores ({} = SQLite + local folder)."""
    kind = getattr(request, "param", "local")
    if kind == "local":
        return {"kind": kind, "config": {}}
    pg, s3 = request.getfixturevalue("pg_server"), request.getfixturevalue("s3_server")
    name = f"t{os.getpid()}_{next(_names)}"
    return {
        "kind": kind,
        "config": {
            "database_url": pg.create_database(name),
            "lancedb_uri": f"s3://freshcontext-tests/{name}/lancedb",
            "object_storage": s3.object_storage(),
        },
    }
