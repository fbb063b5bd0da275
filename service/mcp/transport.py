"""Where the MCP server is reached: ``/mcp`` on the API (streamable HTTP), or a process's stdin/stdout.

HTTP: the SDK's streamable-HTTP app sits behind ``KeyGuard`` as one route of the FastAPI app,
and the host app's lifespan runs what a mounted app's own lifespan never would: the SDK's
session manager and the document watch (``McpHttp.running``). The ``Host`` headers it
answers come from ``mcp.allowed_hosts`` (``service.mcp.config``), not only localhost.

stdio: ``run_stdio`` serves one local agent (``freshcontext mcp --stdio``) with the document
watch beside it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from mcp.server.transport_security import TransportSecuritySettings
from starlette.routing import Route

from service.auth import KeyRing
from service.mcp.auth import KeyGuard
from service.mcp.config import McpConfig
from service.mcp.server import FreshContextMcp

__all__ = ["MCP_PATH", "McpHttp", "run_stdio"]

MCP_PATH = "/mcp"


class McpHttp:
    """The MCP endpoint of one FastAPI app; enter ``running()`` in the app's lifespan."""

    def __init__(self, app: FastAPI, mcp: FreshContextMcp, keys: KeyRing, config: McpConfig) -> None:
        self.mcp = mcp
        security = TransportSecuritySettings(
            enable_dns_rebinding_protection=config.host_check,
            allowed_hosts=config.allowed_hosts, allowed_origins=config.allowed_origins,
        )
        # Builds the session manager too; the app's routes keep only the endpoint, behind the key check.
        starlette_app = mcp.server.streamable_http_app(
            streamable_http_path=MCP_PATH, transport_security=security, max_request_body_size=config.max_request_bytes,
            session_idle_timeout=config.session_idle_timeout_seconds,
        )
        app.router.routes.append(Route(MCP_PATH, endpoint=KeyGuard(starlette_app, keys), include_in_schema=False))

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with self.mcp.server.session_manager.run(), anyio.create_task_group() as tasks:
            tasks.start_soon(self.mcp.watch.run)
            try:
                yield
            finally:
                tasks.cancel_scope.cancel()


async def run_stdio(mcp: FreshContextMcp) -> None:
    """Serve one agent over this process's stdin/stdout until it closes them."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(mcp.watch.run)
        await mcp.server.run_stdio_async()
        tasks.cancel_scope.cancel()
