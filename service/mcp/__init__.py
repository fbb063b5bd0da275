"""The MCP server beside the HTTP API: the same keys, the same ``respond()``, for agents that speak MCP.

``build_server`` makes the server (tools, the document resource, the caller gate, the document
watch); ``McpHttp`` serves it at ``/mcp`` of the FastAPI app; ``run_stdio`` serves it to one
local agent. ``mcp_config`` reads the ``mcp:`` settings (allowed hosts, notification interval).
"""

from service.mcp.auth import ENV_KEY, Caller, CallerGate, KeyGuard, stdio_caller
from service.mcp.config import McpConfig, mcp_config
from service.mcp.server import INSTRUCTIONS, FreshContextMcp, build_server, read_document
from service.mcp.transport import MCP_PATH, McpHttp, run_stdio
from service.mcp.watch import DOCUMENT_URI, DocumentWatch, doc_id_of, document_uri

__all__ = [
    "DOCUMENT_URI",
    "ENV_KEY",
    "INSTRUCTIONS",
    "MCP_PATH",
    "Caller",
    "CallerGate",
    "DocumentWatch",
    "FreshContextMcp",
    "KeyGuard",
    "McpConfig",
    "McpHttp",
    "build_server",
    "doc_id_of",
    "document_uri",
    "mcp_config",
    "read_document",
    "run_stdio",
    "stdio_caller",
]
