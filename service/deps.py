"""What a route depends on: the serving deployment, the store, and who the caller is.

Routes declare these as FastAPI dependencies (``ServingDep``, ``StoreDep``, ``Agent``,
``Staff``, ``Admin``) so a test can override them, and so no handler reaches into
``app.state`` itself. The edge (``service/edge.py``) has already resolved the caller from
the headers alone and refused a ``/v1`` request without a valid key before its body was
read; these dependencies decide what the caller's role may do:

    agent   retrieval, its own traces, outcomes, hand-offs
    staff   the routed-question queue, answers, review (and every trace: the queue links them)
    admin   everything, operations included
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

import anyio
from fastapi import Depends, Request

from context_store.store import ContextStore
from service.auth import KeyRing, Principal, presented_key, refusal
from service.edge import CHALLENGE
from service.errors import ApiError
from service.state import ServiceState, Serving

__all__ = [
    "Admin",
    "Agent",
    "AgentOrStaff",
    "ServiceDep",
    "ServingDep",
    "Staff",
    "StoreDep",
    "caller",
    "keyring",
    "require_key",
    "require_role",
    "require_staff",
    "service_state",
    "serving",
    "store",
]


def service_state(request: Request) -> ServiceState:
    return request.app.state.service


async def serving(request: Request) -> Serving:
    """One deployment for the whole request, even if a promotion lands meanwhile.

    Answered on the event loop unless a look for a promotion or a calibrator is due (then in a
    worker thread: it reads SQL or a file). A sync dependency is a hop to the thread pool and
    back on every request: a queue put, a thread woken, a wake of the loop, each taking the GIL."""
    state = service_state(request)
    return state.settled() or await anyio.to_thread.run_sync(state.serving)


def store(request: Request) -> ContextStore:
    """The serving deployment's store (it follows promotions)."""
    return service_state(request).serving().store


def keyring(request: Request) -> KeyRing:
    return request.app.state.keys


def caller(request: Request) -> Principal | None:
    """Who is calling, as the edge resolved it (None: no valid key or session)."""
    return getattr(request.state, "principal", None)


def require_role(*roles: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency admitting callers that hold one of ``roles`` (an admin holds all); 401 or 403 otherwise."""
    allowed = " or ".join((*roles, "admin"))

    async def dependency(request: Request) -> Principal:  # reads the request only: no hop to the thread pool
        who = caller(request)
        if who is None:
            raise ApiError(401, "unauthorized", refusal(keyring(request), presented_key(request.headers)), CHALLENGE)
        if not who.may(*roles):
            raise ApiError(403, "forbidden", f"the key {who.name!r} has the role {who.role}; this needs {allowed}")
        request.state.client = who.name
        return who

    return dependency


require_key = require_role("agent")  # the retrieval surfaces (the API and the MCP adapter)
require_staff = require_role("staff")
Agent = Annotated[Principal, Depends(require_key)]
AgentOrStaff = Annotated[Principal, Depends(require_role("agent", "staff"))]
Staff = Annotated[Principal, Depends(require_staff)]
Admin = Annotated[Principal, Depends(require_role())]
ServiceDep = Annotated[ServiceState, Depends(service_state)]
ServingDep = Annotated[Serving, Depends(serving)]
StoreDep = Annotated[ContextStore, Depends(store)]
