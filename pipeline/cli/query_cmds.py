"""``freshcontext query``: ask as an agent would, through the same ``respond()`` as the API."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from context_store.errors import FreshContextError
from context_store.index import build_embedder
from context_store.retrieve import MODES, Retriever
from context_store.route import CALIBRATOR_FILE, Question, Responder, Response, load_calibrator, respond
from context_store.store import ContextStore

__all__ = ["COMMANDS"]


def _json_default(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else str(value)


def _print(response: Response) -> None:
    result, decision = response.result, response.decision
    for i, hit in enumerate(result.results, 1):
        click.echo(click.style(f"{i}. {hit.title} — {hit.heading}", bold=True) + f"  [{hit.doc_id} @ {hit.version_id}, score {hit.score:.3f}]")
        click.echo("   " + hit.text.replace("\n", "\n   ")[:600])
    if result.user_id:
        click.echo(click.style(f"user {result.user_id} (snapshot {result.user_version_id}, captured {result.user_captured_at}):", bold=True))
        for fact in result.user_state:
            click.echo(f"  - {fact.text}")
    colour = "green" if decision.decision == "answer" else "yellow"
    click.echo(click.style(f"decision: {decision.decision}", fg=colour, bold=True)
               + f"  confidence {decision.confidence:.3f} ({response.confidence_source}), threshold {decision.threshold:.3f}")
    for reason in decision.reasons:
        click.echo(f"  - {reason.code}: {reason.detail}")
    if response.routed is not None:
        click.echo(f"routed to staff as {response.routed.question_id}")


@click.command()
@click.argument("text")
@click.option("--user", "user_id", default=None, help="Add this user's current state.")
@click.option("--k", default=5, show_default=True, type=click.IntRange(1, 100), help="How many chunks.")
@click.option("--as-of", default=None, help="Answer from the knowledge base as it was at this ISO-8601 time (an audit).")
@click.option("--mode", type=click.Choice(MODES), default=None, help="Override the configured retrieval mode.")
@click.option("--record", is_flag=True, help="Trace the response and route an escalation to staff, as the API does "
              "(by default a command-line query changes nothing).")
@click.option("--json", "as_json", is_flag=True, help="Print the response as POST /v1/retrieve returns it.")
@click.pass_context
def query(ctx: click.Context, text: str, user_id: str | None, k: int, as_of: str | None, mode: str | None, record: bool,
          as_json: bool) -> None:
    """Current company context (and a user's state) for TEXT, with the confidence, decision and reasons the API would give."""
    store = ContextStore.open(ctx.obj["home"])
    try:
        embedder = build_embedder(store.settings.embedding, store.settings.home)
        responder = Responder(store, Retriever(store, embedder), calibrator=load_calibrator(store.settings.home / CALIBRATOR_FILE))
        response = respond(responder, Question(text, user_id=user_id, k=k, as_of=as_of, mode=mode, client="cli"), record=record)
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(response.as_dict(), indent=2, default=_json_default))
    else:
        _print(response)


COMMANDS = [query]
