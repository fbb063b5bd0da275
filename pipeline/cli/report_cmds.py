"""``report``: the support leads' quality report as one HTML page (``--html``) and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import click

from context_store.errors import FreshContextError
from context_store.measure import build_report, render_html
from context_store.store import ContextStore


@click.command()
@click.option("--html", "html_path", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Write the single-page HTML report here.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None,
              help="Write the numbers as JSON here ('-' for stdout; default: stdout unless --html is given).")
@click.option("--days", default=30.0, show_default=True, type=click.FloatRange(min=0.01), help="How far back the plots and rates go.")
@click.pass_context
def report(ctx: click.Context, html_path: Path | None, json_path: Path | None, days: float) -> None:
    """Lag, retrieval quality, escalations and time to knowledge over time, for support leads."""
    try:
        data = build_report(ContextStore.open(ctx.obj["home"]), days=days)
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    text = json.dumps(data, indent=2, default=str)
    if html_path is not None:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(render_html(data), encoding="utf-8")
        click.echo(f"wrote {html_path}", err=True)
    if json_path is not None and str(json_path) != "-":
        json_path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {json_path}", err=True)
    elif html_path is None or json_path is not None:
        click.echo(text)


COMMANDS = [report]
