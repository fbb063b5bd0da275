"""A serving process runs its math libraries on one thread, whatever loaded them first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.compute import THREAD_VARIABLES

REPO = Path(__file__).resolve().parents[2]

# numpy (and so OpenBLAS's pool) is loaded before the entry point runs, as in `freshcontext serve`
# with one worker, where uvicorn imports service.asgi into the command's own process.
_PROBE = """
import json, threadpoolctl
import numpy
def blas():
    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
before = blas()
import service.asgi
print(json.dumps({"before": before, "after": blas()}))
"""


def _threads_around_the_asgi_import(tmp_path: Path, **env: str) -> dict[str, list[int]]:
    clean = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=REPO, capture_output=True, text=True, timeout=120, check=True,
        env={**clean, "FRESHCONTEXT_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO), **env},
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


needs_two_cores = pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: OpenBLAS starts on one thread")


@needs_two_cores
def test_the_asgi_entry_point_limits_a_blas_pool_loaded_before_it_to_one_thread(tmp_path: Path) -> None:
    threads = _threads_around_the_asgi_import(tmp_path)
    assert threads["before"] and max(threads["before"]) > 1  # the pool the limit must undo was there
    assert threads["after"] == [1] * len(threads["before"])


@needs_two_cores
def test_a_thread_count_the_operator_set_is_kept(tmp_path: Path) -> None:
    threads = _threads_around_the_asgi_import(tmp_path, OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2")
    assert threads["before"] and threads["after"] == threads["before"] == [2] * len(threads["before"])
