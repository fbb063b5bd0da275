"""``run``: the API, the Dagster UI and the watcher's warm path together, under one supervisor (``make run``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from pipeline.supervisor import Child, Supervisor

__all__ = ["COMMANDS", "stack"]

REPO = Path(__file__).resolve().parents[2]


def stack(home: Path, *, host: str, port: int, dagster_port: int, watch: bool = True) -> list[Child]:
    """The processes ``freshcontext run`` starts, each its own command as a user would type it."""
    cli = [sys.executable, "-m", "pipeline.cli", "--home", str(home)]
    bin_dir = Path(sys.executable).parent
    dagster = str(bin_dir / "dagster") if (bin_dir / "dagster").exists() else "dagster"
    children = [
        Child("api", [*cli, "serve", "--host", host, "--port", str(port)], cwd=str(REPO)),
        Child("dagster", [dagster, "dev", "-w", str(REPO / "workspace.yaml"), "-h", host, "-p", str(dagster_port)], cwd=str(REPO)),
    ]
    if watch:
        # the warm path: an edit in a source is journaled and indexed within seconds, not at the hourly reconciliation
        children.append(Child("watcher", [*cli, "watch", "--apply"], cwd=str(REPO)))
    return children


@click.command(name="run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int, help="The API's port.")
@click.option("--dagster-port", default=3000, show_default=True, type=int, help="The Dagster UI's port.")
@click.option("--no-watch", is_flag=True, help="Leave the watcher out (changes then wait for the sensors' journal or the reconciliation).")
@click.option("--grace", default=10.0, show_default=True, type=float, help="Seconds each process gets to stop cleanly before it is killed.")
@click.pass_context
def run_cmd(ctx: click.Context, host: str, port: int, dagster_port: int, no_watch: bool, grace: float) -> None:
    """Serve the API and the Dagster UI, and watch the sources with the warm path; one Ctrl-C stops them all.

    Each process runs in its own process group; Ctrl-C (or SIGTERM) is forwarded to every
    group, and whatever still runs after --grace seconds, descendants included, is killed.
    """
    home = ctx.obj["home"]
    if not os.environ.get("DAGSTER_HOME"):
        os.environ["DAGSTER_HOME"] = str(home / "dagster")  # runs and schedules survive a restart
        (home / "dagster").mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(stack(home, host=host, port=port, dagster_port=dagster_port, watch=not no_watch), grace_s=grace,
                            say=lambda line: click.echo(line, err=True))
    click.echo(f"Dagster UI: http://{host}:{dagster_port}   API: http://{host}:{port}/docs"
               + ("" if no_watch else "   watcher: source edits are served within seconds")
               + "   (one Ctrl-C stops everything)", err=True)
    ctx.exit(supervisor.run())


COMMANDS = [run_cmd]
