"""``questions``, ``outbox``, ``learning`` and ``webhook-secret``: the routing loop from a shell."""

from __future__ import annotations

import json
import time

import click

from context_store.errors import FreshContextError
from context_store.store import ContextStore


def _store(ctx: click.Context) -> ContextStore:
    try:
        return ContextStore.open(ctx.obj["home"])
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc


@click.group()
def questions() -> None:
    """Routed questions: list, show, answer, dismiss."""


@questions.command(name="list")
@click.option("--status", default="open", show_default=True, type=click.Choice(["open", "answered", "closed", "dismissed", "all"]))
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def list_cmd(ctx: click.Context, status: str, as_json: bool) -> None:
    """Routed questions, oldest first."""
    from context_store.route import list_questions

    rows = list_questions(_store(ctx), status=None if status == "all" else status, limit=1000)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for q in rows:
        reasons = ",".join(r["code"] for r in q["reasons"])
        click.echo(f"{q['question_id']}  {q['status']:<9} {q['created_at'][:19]}  x{q['ask_count']}  [{reasons}]  {q['text'][:90]}")


@questions.command()
@click.argument("question_id")
@click.pass_context
def show(ctx: click.Context, question_id: str) -> None:
    """One question's working memory as JSON."""
    from context_store.route import get_question

    try:
        click.echo(json.dumps(get_question(_store(ctx), question_id), indent=2))
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc


@questions.command()
@click.argument("question_id")
@click.argument("text")
@click.option("--author", required=True, help="Who answers (kept with the knowledge).")
@click.option("--no-index", is_flag=True, help="Store and write the file only; the next ingest indexes it.")
@click.pass_context
def answer(ctx: click.Context, question_id: str, text: str, author: str, no_index: bool) -> None:
    """Answer a routed question: stored, written into the staff source, indexed."""
    from context_store.learn import index_answers, store_answer, write_answer_file

    store = _store(ctx)
    try:
        stored = store_answer(store, question_id, author=author, text=text, channel="cli")
        path = write_answer_file(store, stored.answer_id)
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"stored {stored.answer_id}; wrote {path}")
    if not no_index:
        from context_store.index import build_embedder

        report = index_answers(store, build_embedder(store.settings.embedding, store.settings.home), [path])
        click.echo(f"indexed in {report.seconds:.2f} s; retrievable: {', '.join(report.retrievable) or 'not yet'}")


@questions.command()
@click.argument("question_id")
@click.option("--note", default=None)
@click.pass_context
def dismiss(ctx: click.Context, question_id: str, note: str | None) -> None:
    """Dismiss an open question without an answer."""
    from context_store.route import set_status

    try:
        set_status(_store(ctx), question_id, "dismissed", note=note)
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc


@click.command()
@click.option("--loop", "loop_seconds", type=float, default=None, help="Keep delivering every N seconds.")
@click.pass_context
def outbox(ctx: click.Context, loop_seconds: float | None) -> None:
    """Deliver due outbound notifications (the API process does this itself when it runs)."""
    from context_store.route import deliver_due, outbox_counts, routing_config

    store = _store(ctx)
    config = routing_config(store.settings)
    while True:
        report = deliver_due(store, secrets=config.outbound_secrets, max_attempts=config.outbound_max_attempts,
                             backoff=config.outbound_backoff_seconds, backoff_cap=config.outbound_backoff_max_seconds,
                             timeout=config.outbound_timeout_seconds)
        click.echo(json.dumps({**report.as_dict(), "counts": outbox_counts(store)}))
        if loop_seconds is None:
            return
        time.sleep(loop_seconds)


@click.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def learning(ctx: click.Context, as_json: bool) -> None:
    """Time to knowledge, reuse without a person, escalation rate, open questions by age, stale answers."""
    from context_store.learn import flag_superseded_answers, learning_metrics

    store = _store(ctx)
    flag_superseded_answers(store)
    m = learning_metrics(store)
    if as_json:
        click.echo(json.dumps(m, indent=2))
        return
    for key, value in m.items():
        click.echo(f"{key}: {value}")


@click.command(name="webhook-secret")
def webhook_secret() -> None:
    """Print a new whsec_ secret for routing.webhook_secrets / outbound_secrets."""
    from context_store.route import generate_secret

    click.echo(generate_secret())


COMMANDS = [questions, outbox, learning, webhook_secret]
