"""The edge every request passes before any route runs: credentials, then the body's size, then its text.

FastAPI reads and parses a request body before it solves a route's dependencies, so a key
checked by a dependency is checked after the body was read. ``EdgeGuard`` is a pure ASGI
middleware that looks at the headers first:

1. credentials: the API key (``X-API-Key`` / ``Authorization: Bearer``) is resolved to a
   ``Principal`` for every request, and a staff session cookie for ``/staff`` requests.
   ``/v1/*`` (but the signed staff webhook) without a valid key is a 401, and a ``/staff``
   form post without a session is sent to the sign-in page, before a byte of the body is read;
2. size: a declared ``Content-Length`` over the limit is a 413 at once; a body streamed
   without one is read up to the limit and refused past it, so no request holds more than
   ``service.max_body_bytes`` (64 KiB by default; the webhook has its own limit) in memory;
3. text: a JSON body must be UTF-8 without unpaired surrogates (``"\\ud800"``), a 400 here,
   so no route, tokenizer or database driver ever meets text that is not valid Unicode.

Routes then check roles with the principal this left in ``request.state`` (``service/deps.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
from starlette.datastructures import Headers
from starlette.responses import JSONResponse, RedirectResponse, Response

from context_store.store import ContextStore
from service.auth import KeyRing, presented_key, refusal
from service.errors import error_body
from service.sessions import SESSION_COOKIE, session_principal

__all__ = ["CHALLENGE", "EdgeGuard", "invalid_unicode", "unauthorized"]

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="freshcontext"'}
_OPEN_STAFF_POSTS = ("/staff/login",)


def unauthorized(keys: KeyRing, key: str | None) -> JSONResponse:
    """The 401 for a missing or wrong key; it says which."""
    return JSONResponse(error_body("unauthorized", refusal(keys, key)), status_code=401, headers=CHALLENGE)


def invalid_unicode(raw: bytes) -> str | None:
    """Why a JSON body's text is not valid Unicode, or None when it is (or is not JSON at all: the route says so)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return f"body is not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 4]!r})"
    if "\\u" not in text:  # surrogates can only arrive as \u escapes: valid UTF-8 cannot hold them
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"body holds text that is not valid Unicode (an unpaired surrogate, {exc.object[exc.start]!a}); send UTF-8 text"
    return None


def _too_large(limit: int, size: str) -> JSONResponse:
    return JSONResponse(error_body("body_too_large", f"body is {size} bytes; the limit is {limit}"), status_code=413)


class EdgeGuard:
    """Pure ASGI; ``limit_for(path)`` is the body limit of a path, ``open_paths`` need no key."""

    def __init__(self, app: Any, *, keys: KeyRing, store: ContextStore, limit_for: Callable[[str], int], open_paths: tuple[str, ...]) -> None:
        self.app, self.keys, self.store, self.limit_for, self.open_paths = app, keys, store, limit_for, open_paths

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, headers = scope["path"], Headers(scope=scope)
        refused = await self._authenticate(scope, path, headers)
        if refused is None:
            refused, receive = await self._body(scope, path, headers, receive)
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Any, path: str, headers: Headers) -> Response | None:
        state = scope.setdefault("state", {})
        if path == "/staff" or path.startswith("/staff/"):
            # a browser surface: signed in by its session cookie alone (a form cannot send a key header)
            cookie = _cookie(headers, SESSION_COOKIE)
            state["principal"] = await anyio.to_thread.run_sync(session_principal, self.store, self.keys, cookie) if cookie else None
            if scope["method"] == "POST" and path not in _OPEN_STAFF_POSTS and state["principal"] is None:
                return RedirectResponse("/staff/login", status_code=303)
            return None
        key = presented_key(headers)
        state["principal"] = self.keys.resolve(key)
        if path.startswith("/v1/") and path not in self.open_paths and state["principal"] is None:
            return unauthorized(self.keys, key)
        return None

    async def _body(self, scope: Any, path: str, headers: Headers, receive: Any) -> tuple[Response | None, Any]:
        declared = headers.get("content-length")
        if declared is None and "chunked" not in headers.get("transfer-encoding", "").lower():
            return None, receive  # no body
        limit = self.limit_for(path)
        if declared is not None and not declared.isdigit():
            return JSONResponse(error_body("invalid_request", f"Content-Length {declared!r} is not a number"), status_code=400), receive
        if declared is not None and int(declared) > limit:
            return _too_large(limit, declared), receive
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return Response(status_code=400), receive  # the client went away mid-body
            body += message.get("body", b"")
            if len(body) > limit:
                return _too_large(limit, f"more than {limit}"), receive
            if not message.get("more_body", False):
                break
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json" or content_type.endswith("+json"):
            why = invalid_unicode(bytes(body))
            if why is not None:
                return JSONResponse(error_body("invalid_unicode", why), status_code=400), receive
        return None, _replay(bytes(body), receive)


def _replay(body: bytes, receive: Any) -> Any:
    """A ``receive`` that hands the route the body already read, then the connection's own messages."""
    sent = False

    async def replay() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _cookie(headers: Headers, name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value or None
    return None
