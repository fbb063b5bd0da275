"""``eval``: measured quality. Each evaluation registers itself on this group in its own module."""

from __future__ import annotations

import click


@click.group(name="eval")
def eval_group() -> None:
    """Measure freshness, retrieval and routing quality on labelled or replayed data."""


COMMANDS = [eval_group]
