"""What a route depends on: the serving deployment, the store, the caller's key.

Routes declare these as FastAPI dependencies (``ServingDep``, ``StoreDep``) so a test can
override them, and so no handler reaches into ``app.state`` itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from context_store.store import ContextStore
from service.auth import ENV_KEYS, KeyRing, fingerprint, presented_key
from service.errors import ApiError
from service.state import ServiceState, Serving

__all__ = [
    "SESSION_COOKIE",
    "KeyDep",
    "ServiceDep",
    "ServingDep",
    "StoreDep",
    "keyring",
    "require_key",
    "require_staff",
    "service_state",
    "serving",
    "staff_signed_in",
    "store",
]

SESSION_COOKIE = "freshcontext_staff"


def service_state(request: Request) -> ServiceState:
    return request.app.state.service


def serving(request: Request) -> Serving:
    """One deployment for the whole request, even if a promotion lands meanwhile."""
    return service_state(request).serving()


def store(request: Request) -> ContextStore:
    """The serving deployment's store (it follows promotions)."""
    return serving(request).store


def keyring(request: Request) -> KeyRing:
    return request.app.state.keys


def require_key(request: Request) -> str:
    """The caller's key fingerprint (kept with traces), or a 401."""
    client = keyring(request).check(request)
    request.state.client = client
    return client


def staff_signed_in(request: Request) -> str | None:
    """Who the caller is on the staff surfaces: an API key, or the queue page's session cookie."""
    ring = keyring(request)
    key = presented_key(request)
    if ring.matches(key):
        return fingerprint(key)  # type: ignore[arg-type]
    if ring.matches_session(request.cookies.get(SESSION_COOKIE)):
        return "staff-session"
    return None


def require_staff(request: Request) -> str:
    client = staff_signed_in(request)
    if client is None:
        if not len(keyring(request)):
            raise ApiError(401, "unauthorized", f"no API keys are configured on this server; set {ENV_KEYS} or api_keys in freshcontext.yaml")
        raise ApiError(401, "unauthorized", "missing or invalid API key: send X-API-Key or Authorization: Bearer <key>")
    request.state.client = client
    return client


ServiceDep = Annotated[ServiceState, Depends(service_state)]
ServingDep = Annotated[Serving, Depends(serving)]
StoreDep = Annotated[ContextStore, Depends(store)]
KeyDep = Annotated[str, Depends(require_key)]
