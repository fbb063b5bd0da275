"""``serve``: the HTTP API for agents."""

from __future__ import annotations

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=1, show_default=True, type=int, help="uvicorn worker processes (the service is stateless).")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, workers: int) -> None:
    """Serve the retrieval API (OpenAPI docs at /docs)."""
    import uvicorn

    uvicorn.run("service.asgi:app", host=host, port=port, workers=workers, log_level="info")


COMMANDS = [serve]
