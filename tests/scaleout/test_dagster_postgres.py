"""Dagster beyond ``dagster dev``: the production layout of deploy/ against PostgreSQL storage.

A gRPC code server, the daemon and the webserver run as three processes, sharing the
instance of ``deploy/dagster.yaml`` (runs, event logs, schedules in PostgreSQL). A run of
``ingest_job`` is submitted through the webserver's GraphQL API, queued, launched by the
daemon, and its steps execute in separate processes (the multiprocess executor), writing
freshcontext's store on PostgreSQL + LanceDB on S3.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from context_store.index.drift import index_drift
from context_store.store.context_store import ContextStore
from tests.conftest import REPO
from tests.scaleout.servers import free_port

pytestmark = pytest.mark.scaleout

BIN = Path(sys.executable).parent
# deploy/README.md's recommended executor settings: steps fork from a server that imported
# the code location once, instead of each paying for importing lancedb and dagster
RUN_CONFIG = yaml.safe_load((REPO / "deploy" / "run_config.multiprocess.yaml").read_text())


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(args, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # its own session: the run workers it started go too
        try:
            proc.wait(timeout=8)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture
def deployment(tmp_path: Path, pg_server: Any, s3_server: Any, sources: dict[str, Path]) -> Iterator[dict[str, Any]]:
    # freshcontext's own home: PostgreSQL + S3, sources named in the file as in production
    home = sources["home"]
    home.mkdir(exist_ok=True)
    name = f"dg{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    (home / "freshcontext.yaml").write_text(
        yaml.safe_dump(
            {
                "database_url": pg_server.create_database(f"{name}_store"),
                "lancedb_uri": f"s3://freshcontext-tests/{name}/lancedb",
                "object_storage": s3_server.object_storage(),
                "company_sources": [{"name": "company", "path": str(sources["company"])}],
                "user_sources": [{"name": "users", "path": str(sources["users"])}],
            }
        )
    )
    pg_server.create_database(f"{name}_dagster")
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    grpc_port, web_port = free_port(), free_port()
    workspace = yaml.safe_load((REPO / "deploy" / "workspace.yaml").read_text())
    workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=grpc_port)
    (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "DAGSTER_PG_HOST": "127.0.0.1",
        "DAGSTER_PG_PORT": str(pg_server.port),
        "DAGSTER_PG_USER": pg_server.user,
        "DAGSTER_PG_PASSWORD": pg_server.password,
        "DAGSTER_PG_DB": f"{name}_dagster",
        "FRESHCONTEXT_HOME": str(home),
        "PYTHONPATH": str(REPO),
    }
    procs = {
        "code_server": _spawn(
            [str(BIN / "dagster"), "code-server", "start", "-m", "pipeline.definitions", "-a", "defs",
             "-h", "127.0.0.1", "-p", str(grpc_port), "--location-name", "freshcontext"],
            env, tmp_path / "code_server.log",
        ),
    }
    procs["daemon"] = _spawn([str(BIN / "dagster-daemon"), "run", "-w", str(tmp_path / "workspace.yaml")], env, tmp_path / "daemon.log")
    procs["webserver"] = _spawn(
        [str(BIN / "dagster-webserver"), "-w", str(tmp_path / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(web_port)],
        env, tmp_path / "webserver.log",
    )
    try:
        yield {"web_port": web_port, "procs": procs, "env": env, "home": home, "dagster_home": dagster_home, "logs": tmp_path}
    finally:
        for proc in procs.values():
            _stop(proc)


def _logs(d: dict[str, Any]) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in sorted(d["logs"].glob("*.log")))


@pytest.mark.parametrize("backend", ["postgres-s3"], indirect=True)
def test_daemon_and_webserver_run_the_ingest_on_postgres_storage(
    deployment: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from dagster import DagsterInstance, DagsterRunStatus
    from dagster_graphql import DagsterGraphQLClient

    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{deployment['web_port']}/server_info", timeout=2):  # noqa: S310
                break
        except OSError:
            dead = {n: p.returncode for n, p in deployment["procs"].items() if p.poll() is not None}
            assert not dead and time.monotonic() < deadline, f"exited {dead}\n{_logs(deployment)}"
            time.sleep(0.5)
    client = DagsterGraphQLClient("127.0.0.1", port_number=deployment["web_port"], timeout=60)
    # the webserver may be up before it has loaded the code location from the code server
    while True:
        try:
            run_id = client.submit_job_execution("ingest_job", repository_location_name="freshcontext", run_config=RUN_CONFIG)
            break
        except Exception as exc:  # noqa: BLE001
            assert time.monotonic() < deadline, f"{exc}\n{_logs(deployment)}"
            time.sleep(1)

    deadline = time.monotonic() + 240
    status = client.get_run_status(run_id)
    while status not in (DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
        assert time.monotonic() < deadline, f"run {run_id} still {status}\n{_logs(deployment)}"
        time.sleep(1)
        status = client.get_run_status(run_id)
    assert status == DagsterRunStatus.SUCCESS, _logs(deployment)

    # the run and its events are in PostgreSQL, where any other webserver or daemon finds them
    for key in ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(key, deployment["env"][key])
    instance = DagsterInstance.from_config(str(deployment["dagster_home"]))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        run = instance.get_run_by_id(run_id)
        assert run is not None and run.status == DagsterRunStatus.SUCCESS
        records = instance.all_logs(run_id)
    finally:
        instance.dispose()
    # multiprocess executor: every step in a process of its own, none in the run worker's
    step_pids = {r.step_key: r.dagster_event.pid for r in records if r.dagster_event and r.dagster_event.event_type_value == "STEP_START"}
    run_pids = {r.dagster_event.pid for r in records if r.dagster_event and r.dagster_event.event_type_value == "PIPELINE_START"}
    assert {"company_documents", "company_chunk_index", "user_snapshots", "user_state_index"} <= set(step_pids)
    assert len(set(step_pids.values())) == len(step_pids) and run_pids and not run_pids & set(step_pids.values())
    materialized = {r.dagster_event.asset_key.path[-1] for r in records if r.dagster_event and r.dagster_event.is_step_materialization}
    assert {"company_documents", "company_chunk_index", "user_snapshots", "user_state_index"} <= materialized
    started = {r.step_key: r.timestamp for r in records if r.dagster_event and r.dagster_event.event_type_value == "STEP_START"}
    ended = {r.step_key: r.timestamp for r in records if r.dagster_event and r.dagster_event.event_type_value == "STEP_SUCCESS"}
    print({k: (round(started[k] - records[0].timestamp, 1), round(ended[k] - records[0].timestamp, 1)) for k in started})

    store = ContextStore.open(deployment["home"])
    assert store.index.uri.startswith("s3://") and store.engine.dialect.name == "postgresql"
    assert all(d.ok for d in index_drift(store)) and store.index.count("company_chunks") > 0
