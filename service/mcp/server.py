"""The MCP server: retrieval with versions, freshness and the answer/escalate decision, as agent tools.

Tools (each with an output schema; the structured result is what an agent should read):

* ``retrieve_context``: exactly the ``POST /v1/retrieve`` body, through the same ``respond()``;
* ``get_document``: one document's text and version, now or as it was at a time;
* ``request_human``: the red button (``POST /v1/handoff``'s ``request_handoff()``);
* ``report_outcome``: what happened after a response (``POST /v1/outcomes``'s ``record_outcome()``).

Resource: ``freshcontext://documents/{doc_id}`` (the current text, version id, valid_from and
age), with ``notifications/resources/updated`` to its subscribers when it changes
(``service.mcp.watch``). Every message passes ``CallerGate`` first (``service.mcp.auth``).
The core's errors reach the agent as tool errors carrying the HTTP API's error code and message.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError, ToolError
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.types import ToolAnnotations
from pydantic import Field

from context_store.errors import FreshContextError, NotFound
from context_store.retrieve import parse_as_of
from context_store.route import OutcomeReport, Question, RecordedOutcome, Response, record_outcome, request_handoff, respond
from context_store.state import document_versions
from context_store.store import as_utc, utcnow
from service.errors import error_response
from service.mcp.auth import Caller, CallerGate, caller_of
from service.mcp.watch import DocumentWatch
from service.schemas import DocumentPublic, HandoffResponse, OutcomePublic, RetrieveResponse, Turn
from service.state import ServiceState

__all__ = ["INSTRUCTIONS", "FreshContextMcp", "build_server", "read_document"]

INSTRUCTIONS = """freshcontext serves a support team's current, versioned knowledge base and each customer's current state.
Call retrieve_context for every customer question. Answer only from the passages it returns, and cite the
version_id of every passage you use, e.g. [company/refunds.md@v-1a2b3c]: versions change, and the citation is how
an answer is checked later. If its decision is "escalate", do not answer from those passages: the question has
been routed to staff already; tell the user a person will follow up, or call request_human when they need a
person now. Call request_human whenever the user asks for a person, is distressed, or the topic is a dispute,
fraud, legal or financial hardship, and send the whole conversation so nobody asks the user to repeat it.
When you learn how the conversation ended (resolved, unresolved, reopened, the user asked for a person, or left),
call report_outcome with the trace_id of the response you answered from: that is how answers are judged."""

RETRIEVE = """Current company knowledge (and one user's current state) for a customer question, with a decision.
Returns cited passages (doc_id, version_id, title, age_seconds, score), the user's facts with their snapshot
version and staleness, a calibrated confidence, decision "answer" or "escalate" with typed reasons, and a trace_id.
decision "answer": answer only from these passages and cite each one's version_id.
decision "escalate": do not answer from them; the question is already routed to staff (routed_question); tell the
user a person will follow up, or call request_human if they need one now.
Pass conversation_id on every call and the last turns as history: staff then see the conversation."""

GET_DOCUMENT = """The full text and version of one document (a doc_id from retrieve_context), now or as it was at
as_of (ISO-8601). Use it to read the whole article behind a passage or to check what a policy said when an
earlier answer was given. Cite its version_id."""

REQUEST_HUMAN = """The red button: hand this conversation to a person now, without a confidence check.
Use it when the user asks for a person, is upset or stuck, the topic is sensitive (refund dispute, fraud, legal,
financial hardship), or retrieve_context escalated and the user needs someone now. Send the whole conversation as
transcript, oldest first (at most 200 turns and 100,000 characters), so the user never repeats themselves; the
person also sees the user's current state and what your last retrieve_context call served. A second call in the
same conversation joins the open hand-off. Returns the routed question; tell the user a person will take over."""

REPORT_OUTCOME = """Report what happened after a response, once you know: this is how freshcontext learns which answers worked.
Name the response by trace_id (from retrieve_context; preferred) or conversation_id (its latest response).
outcome is one of: resolved (the user got what they needed), unresolved (they did not), reopened (a case
thought resolved came back), escalated_by_user (the user asked for a person; call request_human too if they need
one now), abandoned (the user left without an answer). Add csat (1-5) or thumbs (up|down) when the user gave them.
A failed bot answer (unresolved, reopened, thumbs down, csat <= 2) opens a review for staff.
Idempotent by event_id: a repeat with the same event_id stores nothing and returns the first result with
duplicate: true. Without event_id a new one is generated (returned as event_id), so each such call is a new
outcome: to retry safely, repeat the call with the event_id the first one returned or pass your own.
An agent key reports only on responses it retrieved itself."""


@contextmanager
def _tool_errors() -> Iterator[None]:
    """A core error becomes a tool error the model can read, coded like the HTTP API's (``unknown_user (404): ...``)."""
    try:
        yield
    except FreshContextError as exc:
        response = error_response(exc)  # the one table, and the very message the HTTP API answers with
        error = json.loads(bytes(response.body))["error"]
        raise ToolError(f"{error['code']} ({response.status_code}): {error['message']}") from exc


def read_document(service: ServiceState, doc_id: str, as_of: str | datetime | None = None) -> DocumentPublic:
    """One document's version now (or at ``as_of``), with its text; ``NotFound`` says why there is none."""
    when = parse_as_of(as_of)
    now = utcnow()
    found = document_versions(service.store, doc_id, as_of=when or now)
    if not found:
        at = when.isoformat() if when else "now: it was deleted (pass as_of to read an earlier version)"
        raise NotFound(f"document {doc_id!r} has no version valid at {at}")
    v = found[-1]
    return DocumentPublic(
        doc_id=doc_id, version_id=v.version_id, title=v.title, text=v.text, source_path=v.source_path,
        valid_from=v.valid_from, valid_to=v.valid_to, current=v.valid_to is None,
        age_seconds=max(0.0, (now - as_utc(v.valid_from)).total_seconds()), as_of=when,
    )


@contextmanager
def _host_owns_logging() -> Iterator[None]:
    """``MCPServer()`` calls ``logging.basicConfig(INFO, a rich handler)``: a no-op only when the root logger
    has a handler already. The host process (CLI, uvicorn worker, tests) configures logging, not a library."""
    root, guard = logging.getLogger(), logging.NullHandler()
    root.addHandler(guard)
    try:
        yield
    finally:
        root.removeHandler(guard)


@dataclass
class FreshContextMcp:
    """The SDK server with its parts: the caller gate and the document watch (run beside the transport)."""

    server: MCPServer[Any]
    gate: CallerGate
    watch: DocumentWatch


def build_server(
    service: ServiceState,
    *,
    stdio_caller: Caller | str | None = None,
    notify_interval: float = 1.0,
    on_response: Callable[[Response], None] | None = None,
    on_outcome: Callable[[RecordedOutcome], None] | None = None,
) -> FreshContextMcp:
    """The MCP server over one API process's serving state; ``stdio_caller`` is who a stdio connection is
    (``auth.stdio_caller``); ``on_response`` sees each ``retrieve_context`` response and ``on_outcome`` each
    newly stored outcome (the API's metrics)."""
    bus = InMemorySubscriptionBus()
    gate = CallerGate(stdio_caller)
    watch = DocumentWatch(lambda: service.store, bus, notify_interval)
    with _host_owns_logging():
        server: MCPServer[Any] = MCPServer(
            "freshcontext", title="freshcontext", version="1.0.0", instructions=INSTRUCTIONS, subscriptions=bus,
            middleware=[gate, watch.middleware],
        )
    watch.install(server)
    _tools(server, service, gate, on_response)
    _report_tool(server, service, gate, on_outcome)
    _resources(server, service)
    return FreshContextMcp(server, gate, watch)


# A tool that records (a trace, an outcome) and never deletes: the same call twice records twice.
_RECORDS = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)


def _tools(server: MCPServer[Any], service: ServiceState, gate: CallerGate, on_response: Callable[[Response], None] | None) -> None:
    # retrieve_context writes a trace and may route the question: not read-only, never destructive
    @server.tool(description=RETRIEVE, annotations=_RECORDS)
    def retrieve_context(
        query: Annotated[str, Field(description="The customer's question (1-2000 characters).")],
        ctx: Context,
        user_id: Annotated[str | None, Field(description="Add this user's current state; never anyone else's.")] = None,
        k: Annotated[int, Field(description="How many passages (1-100).")] = 5,
        as_of: Annotated[str | None, Field(description="ISO-8601 time: answer from the knowledge base as it was then (an audit; nothing is routed).")] = None,
        conversation_id: Annotated[str | None, Field(description="Your conversation id: kept with the trace and any routed question.")] = None,
        history: Annotated[list[Turn] | None, Field(description="The conversation's last turns, oldest first (at most 50).")] = None,
    ) -> RetrieveResponse:
        caller = caller_of(ctx.request_context.request, gate.stdio)
        question = Question(
            query=query, user_id=user_id, k=k, as_of=as_of, conversation_id=conversation_id,
            client=caller.client if isinstance(caller, Caller) else None,
            history=[t.model_dump() for t in history] if history is not None else None,
        )
        with _tool_errors():
            response = respond(service.serving().responder, question)
        if on_response is not None:
            on_response(response)
        return RetrieveResponse.model_validate(response.as_dict())

    @server.tool(description=GET_DOCUMENT, annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False))
    def get_document(
        doc_id: Annotated[str, Field(description="The document id, e.g. company/refunds.md (a result's doc_id).")],
        as_of: Annotated[str | None, Field(description="ISO-8601 time: the version valid then (default: now).")] = None,
    ) -> DocumentPublic:
        with _tool_errors():
            return read_document(service, doc_id, as_of)

    @server.tool(description=REQUEST_HUMAN, annotations=ToolAnnotations(destructive_hint=False, open_world_hint=True))
    def request_human(
        conversation_id: Annotated[str, Field(description="Your conversation id (1-200 characters).")],
        reason: Annotated[str, Field(description="Why a person is needed, for the person (1-2000 characters).")],
        transcript: Annotated[list[Turn], Field(description="The whole conversation, oldest first.")],
        user_id: Annotated[str | None, Field(description="The user's id, so the person sees their current state.")] = None,
    ) -> HandoffResponse:
        with _tool_errors():
            outcome = request_handoff(
                service.store, conversation_id=conversation_id, reason=reason, user_id=user_id,
                transcript=[t.model_dump() for t in transcript],
            )
        return HandoffResponse.model_validate(outcome.as_dict())


def _report_tool(
    server: MCPServer[Any], service: ServiceState, gate: CallerGate, on_outcome: Callable[[RecordedOutcome], None] | None,
) -> None:
    # Stores an outcome (maybe a review). Not idempotent by arguments alone: without an event_id each call is new.

    # Types only, as POST /v1/outcomes's body: outcome, csat, thumbs and at are checked by record_outcome, so a bad
    # value gets the HTTP API's own code and message (invalid_outcome, invalid_csat, outcome_in_future, ...).
    @server.tool(description=REPORT_OUTCOME, annotations=_RECORDS)
    def report_outcome(
        outcome: Annotated[str, Field(description="resolved | unresolved | reopened | escalated_by_user | abandoned")],
        ctx: Context,
        trace_id: Annotated[str | None, Field(description="The response it is about: retrieve_context's trace_id.")] = None,
        conversation_id: Annotated[str | None, Field(description="Or the conversation: its latest response at `at`.")] = None,
        csat: Annotated[int | None, Field(description="Customer satisfaction, 1-5.")] = None,
        thumbs: Annotated[str | None, Field(description="up | down")] = None,
        note: Annotated[str | None, Field(description="A short note for staff.")] = None,
        event_id: Annotated[str | None, Field(description="Your idempotency key (default: a new one, returned).")] = None,
        at: Annotated[str | None, Field(description="ISO-8601 time it happened (default: now); not in the future.")] = None,
    ) -> OutcomePublic:
        caller = caller_of(ctx.request_context.request, gate.stdio)
        client, role = (caller.client, caller.role) if isinstance(caller, Caller) else (None, None)
        report = OutcomeReport(
            event_id=event_id if event_id is not None else f"mcp-{uuid.uuid4().hex}", outcome=outcome, trace_id=trace_id,
            conversation_id=conversation_id, csat=csat, thumbs=thumbs, note=note, at=at, client=client,
        )
        with _tool_errors():
            recorded = record_outcome(service.store, report, own_traces_only=role != "admin")  # as POST /v1/outcomes
        if on_outcome is not None and not recorded.duplicate:
            on_outcome(recorded)
        return OutcomePublic.model_validate(recorded.as_dict())


def _resources(server: MCPServer[Any], service: ServiceState) -> None:
    @server.resource(
        "freshcontext://documents/{+doc_id}", name="document", mime_type="application/json",
        description="A document as served now: text, version_id, valid_from, age_seconds. Subscribe to hear when it changes.",
    )
    def document(doc_id: str) -> str:
        try:
            return read_document(service, doc_id).model_dump_json()
        except NotFound as exc:
            raise ResourceNotFoundError(str(exc)) from exc
        except FreshContextError as exc:
            raise ResourceError(str(exc)) from exc
