"""The ``freshcontext`` command. Each subcommand family lives in its own module."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from context_store.settings import resolve_home
from pipeline.supervisor import stoppable_children

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="FRESHCONTEXT_HOME",
    help="Directory holding config, SQLite and LanceDB (default: $FRESHCONTEXT_HOME or ./.freshcontext).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.pass_context
def main(ctx: click.Context, home: Path | None, verbose: int) -> None:
    """freshcontext: current, cited, accountable context for AI support agents.

    \b
    Typical session:
      freshcontext --home ./kb init --company-dir ./help --user-dir ./users
      freshcontext --home ./kb ingest
      freshcontext --home ./kb query "how do refunds work" --user u-1001
      freshcontext --home ./kb status
    """
    stoppable_children()  # Dagster runs, the watcher, dagster dev: each must stop when told to
    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    resolved = resolve_home(home)
    # Child processes (Dagster runs, the watcher) must see the same home.
    os.environ["FRESHCONTEXT_HOME"] = str(resolved)
    ctx.obj = {"home": resolved}


def _register() -> None:
    from pipeline.cli import (  # noqa: F401  (register "eval freshness" and "eval routing")
        calibrate_cmds,
        db_cmds,
        eval_cmds,
        eval_freshness,
        eval_retrieval,
        eval_routing,
        ingest_cmds,
        mcp_cmds,
        outcomes_cmds,
        promotion_cmds,
        query_cmds,
        report_cmds,
        routing_cmds,
        run_cmds,
        serve_cmds,
        watch_cmds,
    )

    for module in (ingest_cmds, query_cmds, serve_cmds, eval_cmds, eval_retrieval, calibrate_cmds, watch_cmds, routing_cmds, db_cmds, report_cmds,
                   promotion_cmds, mcp_cmds, outcomes_cmds, run_cmds):
        for command in module.COMMANDS:
            main.add_command(command)


_register()
