"""``promote``: run the promotion gate now (Dagster runs it hourly and after every index change)."""

from __future__ import annotations

import json

import click

from context_store.errors import FreshContextError
from context_store.index import build_embedder
from context_store.measure import pending_change, run_gate
from context_store.store import ContextStore


@click.command()
@click.option("--dry-run", is_flag=True, help="Build and evaluate the candidate, but do not switch even if it passes.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.pass_context
def promote(ctx: click.Context, dry_run: bool, as_json: bool) -> None:
    """Build the index for the configured model/chunker beside the live one, evaluate both, switch if at least as good."""
    try:
        store = ContextStore.open(ctx.obj["home"])
        if pending_change(store) is None:
            summary = {"decision": "nothing pending", "serving": store.deployment.fingerprint, "model": store.settings.embedding.model}
        else:
            live = build_embedder(store.settings.embedding, store.settings.home)
            candidate = build_embedder(store.configured.embedding, store.settings.home)
            build, gate, decision = run_gate(store, live, candidate, dry_run=dry_run)
            assert build is not None and gate is not None
            summary = {
                "decision": decision.decision if decision else ("passed (dry run)" if gate.passed else "rejected"),
                "reason": gate.reason, "serving_before": gate.live_fingerprint, "candidate": gate.candidate_fingerprint,
                "documents_rebuilt": build.documents_rebuilt, "chunks_embedded": build.chunks_embedded,
                "comparison": gate.comparison(),
            }
    except FreshContextError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(f"{summary['decision']}: {summary.get('reason', '')}".rstrip(": "))
    for row in summary.get("comparison", []):
        click.echo(f"  {row['set']:<12} {row['metric']:<30} live {row['live']:.4f}  candidate {row['candidate']:.4f}")


COMMANDS = [promote]
