"""``freshcontext mcp --stdio``: the MCP tools for one local agent, over this process's stdin/stdout.

HTTP agents need no command of their own: ``freshcontext serve`` answers MCP at ``/mcp``.
The stdio server checks the key in ``FRESHCONTEXT_API_KEY`` (the MCP client config's
``env``) against the home's keys, as the HTTP API checks its header.
"""

from __future__ import annotations

import contextlib
import os
import sys

import click

__all__ = ["COMMANDS"]


@click.command("mcp")
@click.option("--stdio", "stdio", is_flag=True, help="Serve over stdin/stdout (how a local agent starts an MCP server).")
@click.pass_context
def mcp(ctx: click.Context, stdio: bool) -> None:
    """Serve retrieve_context, get_document, request_human and report_outcome to an agent over MCP (stdio).

    \b
    The key: FRESHCONTEXT_API_KEY=<one of the home's api_keys>. Over HTTP, run
    `freshcontext serve` and point the agent at http://<host>:<port>/mcp instead.
    """
    if not stdio:
        raise click.UsageError("pass --stdio (over HTTP the MCP endpoint is /mcp of `freshcontext serve`)")
    import anyio

    from context_store.store import ContextStore
    from service.auth import KeyRing
    from service.compute import one_compute_thread
    from service.mcp import ENV_KEY, build_server, mcp_config, run_stdio, stdio_caller
    from service.state import ServiceState

    one_compute_thread()  # one agent, one query at a time: as `serve` does per worker
    # stdout is the protocol's: anything printed while the model loads would corrupt it
    with contextlib.redirect_stdout(sys.stderr):
        store = ContextStore.open(ctx.obj["home"])
        service = ServiceState(store)
        service.warm_up()
        caller = stdio_caller(KeyRing.from_settings(store.settings), os.environ.get(ENV_KEY))
        server = build_server(service, stdio_caller=caller, notify_interval=mcp_config(store.settings).notify_interval_seconds)
    if isinstance(caller, str):
        click.echo(f"freshcontext mcp: every request will be refused: {caller}", err=True)
    anyio.run(run_stdio, server)


COMMANDS = [mcp]
