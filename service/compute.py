"""One compute thread per serving process: its parallelism is its concurrent requests and its
worker processes, never a math library's own thread pool.

A request's numpy products are small. OpenBLAS's pool (a thread per core) wakes for each of
them and spins after it, on the cores the other requests' encodes need. Measured with
``bench/latency.py --workers 1`` (100,000 chunks, 8 clients, 2 cores, 2026-12-05): 137.1 req/s
at 14.0 ms of CPU a request with OpenBLAS on its default two threads, 174.8 req/s at 8.1 ms
with one. ``freshcontext serve`` set the variables below, but after numpy had loaded OpenBLAS
in its own process: only the worker processes uvicorn spawns (``--workers`` > 1) read them.
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

__all__ = ["THREAD_VARIABLES", "one_compute_thread"]

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def one_compute_thread() -> None:
    """Math libraries in this process, and in the processes it starts, run on one thread each
    (or on the count a variable above already names).

    The variables reach libraries loaded later (torch's OpenMP) and uvicorn's worker processes;
    the libraries this process loaded already (every command imports numpy before it runs) are
    limited in place: a variable set after OpenBLAS started changes nothing there."""
    for name in THREAD_VARIABLES:
        os.environ.setdefault(name, "1")
    threadpool_limits(limits={"blas": _count("OPENBLAS_NUM_THREADS"), "openmp": _count("OMP_NUM_THREADS")})


def _count(name: str) -> int:
    value = os.environ.get(name, "1").strip()
    return int(value) if value.isdigit() and int(value) > 0 else 1
