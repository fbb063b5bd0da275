"""``serve``: the HTTP API for agents."""

from __future__ import annotations

import os
import shutil
import tempfile

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="uvicorn worker processes (the service is stateless).")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int) -> None:
    """Serve the retrieval API (OpenAPI docs at /docs; every /v1 call needs an API key)."""
    import uvicorn

    from service.compute import one_compute_thread

    # One compute thread per worker: measured, two torch threads per query under concurrent
    # load made encoding several times slower. Set before the workers import numpy/torch.
    one_compute_thread()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="freshcontext-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir  # /metrics adds up all workers
    try:
        # A worker answers the supervisor's health pings from a thread; on a CPU-starved host
        # (ingest, embedding and API on two cores) a ping can wait past uvicorn's default 5 s,
        # and the supervisor then kills a healthy worker mid-request. Info level, so a worker
        # that did die or was replaced is in the log.
        uvicorn.run(
            "service.asgi:app", host=host, port=port, workers=workers, log_level="info", access_log=False,
            timeout_worker_healthcheck=30,
        )
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


COMMANDS = [serve]
