"""API replicas: two uvicorn processes, one PostgreSQL + S3 store, no state of their own.

Both serve the same versions, each sees the other's evidence trail (traces live in the SQL
store), and both pick up a new ingest without a restart.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import REFUNDS_V1, REPO
from tests.scaleout.servers import free_port

pytestmark = pytest.mark.scaleout
KEY = "replica-test-key"


def _ingest(sources: dict[str, Path]) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "tests.scaleout.worker", "--home", str(sources["home"]),
         "--company", str(sources["company"]), "--users", str(sources["users"])],
        cwd=REPO, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _replica(home: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "FRESHCONTEXT_HOME": str(home), "FRESHCONTEXT_API_KEYS": KEY, "PYTHONPATH": str(REPO)}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.scaleout.hashing_app:app", "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def _ask(client: httpx.Client, base: str, **body: Any) -> dict[str, Any]:
    response = client.post(f"{base}/v1/retrieve", json=body, headers={"X-API-Key": KEY})
    assert response.status_code == 200, response.text
    return response.json()


@pytest.mark.parametrize("backend", ["postgres-s3"], indirect=True)
def test_two_replicas_share_one_store(sources: dict[str, Path], tmp_path: Path) -> None:
    _ingest(sources)
    ports = [free_port(), free_port()]
    replicas = [_replica(sources["home"], port, tmp_path / f"replica-{port}.log") for port in ports]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    try:
        with httpx.Client(timeout=30) as client:
            deadline = time.monotonic() + 120
            for base, proc in zip(bases, replicas):
                while True:
                    assert proc.poll() is None, (tmp_path / f"replica-{base.rsplit(':', 1)[1]}.log").read_text()[-3000:]
                    try:
                        if client.get(f"{base}/readyz").status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    assert time.monotonic() < deadline, "replica not ready"
                    time.sleep(0.3)

            question = {"query": "What is the refund window?", "user_id": "u-1", "k": 3}  # words the toy corpus holds
            a, b = (_ask(client, base, **question) for base in bases)
            assert [(r["doc_id"], r["version_id"]) for r in a["results"]] == [(r["doc_id"], r["version_id"]) for r in b["results"]]
            assert "30 days" in a["results"][0]["text"]
            # the evidence trail written through one replica is read through the other
            trail = client.get(f"{bases[1]}/v1/traces/{a['trace_id']}", headers={"X-API-Key": KEY})
            assert trail.status_code == 200 and trail.json()["trace_id"] == a["trace_id"]

            # a new ingest is served by both, without restarting either
            (sources["company"] / "refunds.md").write_text(REFUNDS_V1.replace("within 30 days", "within 14 days"))
            _ingest(sources)
            deadline = time.monotonic() + 30
            for base in bases:
                while "14 days" not in _ask(client, base, **question)["results"][0]["text"]:
                    assert time.monotonic() < deadline, f"{base} still serves the old version"
                    time.sleep(0.3)
    finally:
        for proc in replicas:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=20)
