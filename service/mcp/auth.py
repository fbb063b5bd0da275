"""Who is calling the MCP server: the same keys as the HTTP API, checked before anything runs.

Over streamable HTTP, ``KeyGuard`` (pure ASGI, in front of the SDK's app) checks
``X-API-Key`` / ``Authorization: Bearer`` with the app's ``KeyRing`` on every request; a
request without a good key never reaches MCP and is answered ``401`` with a JSON-RPC error
whose message says what is missing, which the SDK's client raises as an ``MCPError``. The
caller found is left in the request's state for the tools (their traces carry its key's
name). Only agent and admin keys reach the tools: a staff key is answered 403.

Over stdio there are no headers: ``freshcontext mcp --stdio`` reads the key from
``FRESHCONTEXT_API_KEY`` in its environment (an MCP client config's ``env``). ``CallerGate``,
the first MCP middleware on both transports, refuses every request of a connection without
a caller, with the same message the HTTP API gives, so nothing runs unauthenticated. Only
the handshake passes (``server/discover``, ``initialize``, ``ping``): over stdio the first
message fixes the protocol era, and a refused handshake would end in the client's fallback
error ("initialize handshake is not accepted") instead of the message that says what to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_REQUEST
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from service.auth import KeyRing, Principal, presented_key, refusal

__all__ = ["ENV_KEY", "Caller", "CallerGate", "KeyGuard", "caller_of", "stdio_caller"]

ENV_KEY = "FRESHCONTEXT_API_KEY"
_STATE_KEY = "freshcontext_caller"
UNAUTHORIZED = INVALID_REQUEST  # MCP has no code of its own for it; data.code says "unauthorized"
HANDSHAKE = frozenset({"server/discover", "initialize", "notifications/initialized", "ping"})
TOOL_ROLES = ("agent",)  # the tools are the agent's surface (retrieve, documents, a person); an admin holds every role


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: its key's name (never the key), kept with traces, and its role: an ``agent``
    reads and reports on only the responses its own key recorded, an ``admin`` on any (as over HTTP)."""

    client: str
    role: str


def _refusal(message: str, code: str = "unauthorized", status: int = 401) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": None, "error": {"code": UNAUTHORIZED, "message": message, "data": {"code": code, "http_status": status}}}


class KeyGuard:
    """ASGI: authenticate every request to the MCP endpoint before the SDK sees it."""

    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        key = presented_key(Headers(scope=scope))
        who = self.keys.resolve(key)
        if who is None or not who.may(*TOOL_ROLES):
            status, code = (401, "unauthorized") if who is None else (403, "forbidden")
            message = refusal(self.keys, key) if who is None else _wrong_role(who)
            body = json.dumps(_refusal(message, code, status)).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if who is None:
                headers.append((b"www-authenticate", b'Bearer realm="freshcontext"'))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})[_STATE_KEY] = Caller(who.name, who.role)
        await self.app(scope, receive, send)


def _wrong_role(who: Principal) -> str:
    return f"the key {who.name!r} has the role {who.role}; the MCP tools need an agent or admin key"


def stdio_caller(keys: KeyRing, key: str | None) -> Caller | str:
    """The caller a stdio server runs as, or the message every request of it is refused with."""
    if not len(keys):
        return "no API keys are configured for this home; set FRESHCONTEXT_API_KEYS or api_keys in freshcontext.yaml"
    if not key:
        return f"missing API key: set {ENV_KEY} in the environment the MCP client starts `freshcontext mcp --stdio` with"
    who = keys.resolve(key)
    if who is None:
        return f"invalid API key in {ENV_KEY}"
    return Caller(who.name, who.role) if who.may(*TOOL_ROLES) else _wrong_role(who)


def caller_of(request: Any, stdio: Caller | str | None) -> Caller | str:
    """The caller of one MCP message: HTTP's from the request ``KeyGuard`` passed, else the stdio one."""
    if request is not None:
        found = getattr(getattr(request, "state", None), _STATE_KEY, None)
        return found if isinstance(found, Caller) else "missing API key: send the X-API-Key header or Authorization: Bearer <key>"
    return stdio if stdio is not None else "no caller: this transport carries no API key"


class CallerGate:
    """MCP middleware, outermost: no request but the handshake runs without a caller."""

    def __init__(self, stdio: Caller | str | None = None) -> None:
        self.stdio = stdio

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        caller = caller_of(ctx.request, self.stdio)
        if isinstance(caller, str) and ctx.method not in HANDSHAKE:
            if ctx.request_id is None:  # a notification has nobody to tell; drop it
                return None
            raise MCPError(UNAUTHORIZED, caller, data={"code": "unauthorized"})
        return await call_next(ctx)
