"""Tell subscribers when a document they watch changes: ``notifications/resources/updated``.

The change happens in another process (the watcher's warm path, a Dagster run, a staff
answer), so this process learns of it by looking: every ``notify_interval_seconds`` it reads
the current version of the documents someone watches, and only those (one indexed SQL read
of those ids; nothing at all while nobody watches). A new version or a tombstone is a change.

Both protocol eras are served, because the SDK delivers them on different pipes:

* 2026-07-28 clients open a ``subscriptions/listen`` stream naming
  ``freshcontext://documents/<doc_id>`` URIs. A middleware sees which documents each open
  stream names (the stream's lifetime is the listen request's), and a change is published
  on the server's ``SubscriptionBus``, which the SDK fans out to the matching streams.
* 2025-era clients send ``resources/subscribe``; their session's standalone stream gets
  ``send_resource_updated``. The SDK has no public hook for that request on ``MCPServer``
  yet, so ``install`` registers it on the low-level server, as its migration guide says.

An event says *that* a document changed; the client re-reads the resource for the text.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.session import ServerSession
from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus
from mcp.types import EmptyResult, SubscribeRequestParams, SubscriptionsListenRequestParams, UnsubscribeRequestParams

from context_store.state import current_version_ids
from context_store.store import ContextStore

__all__ = ["DOCUMENT_URI", "DocumentWatch", "doc_id_of", "document_uri"]

log = logging.getLogger(__name__)
DOCUMENT_URI = "freshcontext://documents/"
SEND_TIMEOUT_S = 5.0


def document_uri(doc_id: str) -> str:
    return DOCUMENT_URI + doc_id


def doc_id_of(uri: str) -> str | None:
    """The document a ``freshcontext://documents/...`` URI names (percent-escapes decoded), else None."""
    if not uri.startswith(DOCUMENT_URI):
        return None
    return unquote(uri[len(DOCUMENT_URI):]) or None


class DocumentWatch:
    """Which documents are watched, by whom, and the poll that tells them of a change."""

    def __init__(self, store_of: Callable[[], ContextStore], bus: SubscriptionBus, interval: float) -> None:
        self._store_of = store_of
        self._bus = bus
        self.interval = interval
        self._streams: Counter[str] = Counter()  # doc id -> open listen streams naming it
        self._sessions: dict[str, dict[str, ServerSession]] = {}  # doc id -> legacy connection -> its session
        self._told: dict[str, str | None] = {}  # doc id -> the version subscribers last heard of

    @property
    def watched(self) -> set[str]:
        return set(self._streams) | {d for d, s in self._sessions.items() if s}

    async def _baseline(self, doc_ids: list[str]) -> None:
        """Remember the versions a new subscriber starts from, so the first change after it is told."""
        fresh = [d for d in doc_ids if d not in self._told]
        if fresh:
            self._told.update(await anyio.to_thread.run_sync(current_version_ids, self._store_of(), fresh))

    async def middleware(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        """Track the documents each ``subscriptions/listen`` stream names, for as long as it is open."""
        if ctx.method != "subscriptions/listen":
            return await call_next(ctx)
        params = SubscriptionsListenRequestParams.model_validate(ctx.params or {}, by_name=False)
        ids = [d for uri in params.notifications.resource_subscriptions or () if (d := doc_id_of(uri))]
        await self._baseline(ids)
        self._streams.update(ids)
        try:
            return await call_next(ctx)
        finally:
            self._streams.subtract(ids)
            self._streams = +self._streams  # documents nobody watches any more leave the count

    @staticmethod
    def _connection(ctx: ServerRequestContext[Any, Any]) -> str:
        headers = getattr(ctx.request, "headers", None)
        return (headers.get("mcp-session-id") if headers is not None else None) or "stdio"

    async def subscribe(self, ctx: ServerRequestContext[Any, Any], params: SubscribeRequestParams) -> EmptyResult:
        doc_id = doc_id_of(str(params.uri))
        if doc_id is not None:
            await self._baseline([doc_id])
            self._sessions.setdefault(doc_id, {})[self._connection(ctx)] = ctx.session
        return EmptyResult()

    async def unsubscribe(self, ctx: ServerRequestContext[Any, Any], params: UnsubscribeRequestParams) -> EmptyResult:
        doc_id = doc_id_of(str(params.uri))
        if doc_id is not None:
            self._sessions.get(doc_id, {}).pop(self._connection(ctx), None)
        return EmptyResult()

    def install(self, server: MCPServer[Any]) -> None:
        """Serve ``resources/subscribe`` for 2025-era clients (also makes ``initialize`` advertise it)."""
        lowlevel = server._lowlevel_server  # private: the SDK's documented workaround until a public hook exists
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, self.subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, self.unsubscribe)

    async def poll(self) -> list[str]:
        """Look once; tell every subscriber of a changed document. Returns the changed documents' URIs."""
        watched = self.watched
        self._told = {d: v for d, v in self._told.items() if d in watched}  # nobody left to tell
        if not watched:
            return []
        now = await anyio.to_thread.run_sync(current_version_ids, self._store_of(), watched)
        changed = sorted(d for d, v in now.items() if d in self._told and self._told[d] != v)
        self._told.update(now)
        for doc_id in changed:
            uri = document_uri(doc_id)
            await self._bus.publish(ResourceUpdated(uri=uri))
            for key, session in list(self._sessions.get(doc_id, {}).items()):
                await self._send(doc_id, key, session, uri)
        return [document_uri(d) for d in changed]

    async def _send(self, doc_id: str, key: str, session: ServerSession, uri: str) -> None:
        try:
            with anyio.fail_after(SEND_TIMEOUT_S):
                await session.send_resource_updated(uri)
        except Exception as exc:  # a session gone (closed, timed out) stops being told; the others still are
            log.info("MCP session %s no longer takes updates of %s: %r", key, doc_id, exc)
            self._sessions.get(doc_id, {}).pop(key, None)

    async def run(self) -> None:
        """Poll until cancelled; a failed look (the database busy, say) is logged and tried again."""
        while True:
            await anyio.sleep(self.interval)
            try:
                await self.poll()
            except Exception:
                log.exception("looking for changed documents failed; trying again in %.1fs", self.interval)
