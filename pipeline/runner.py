"""Run the asset graph in-process (the CLI's ``ingest``), on the persistent instance when there is one."""

from __future__ import annotations

import os
from typing import Any

import dagster as dg

from pipeline.definitions import INGEST_ASSETS, INGEST_CHECKS, LEARNING_ASSETS, LEARNING_CHECKS
from pipeline.resources import build_resources

__all__ = ["materialize_ingest"]


def materialize_ingest(
    home: str,
    *,
    company_dirs: list[str] | None = None,
    user_dirs: list[str] | None = None,
    show_progress: bool = False,
    trigger: str = "cli",
    selection: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize the ingest assets and their drift checks.

    With ``DAGSTER_HOME`` set the run is recorded there, so ``dagster dev`` shows it.
    """
    resources = build_resources(
        home, company_dirs=company_dirs or [], user_dirs=user_dirs or [], show_progress=show_progress, trigger=trigger
    )
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    kwargs: dict[str, Any] = {"resources": resources, "instance": instance, "raise_on_error": False}
    if selection:
        kwargs["selection"] = selection
    return dg.materialize([*INGEST_ASSETS, *INGEST_CHECKS, *LEARNING_ASSETS, *LEARNING_CHECKS], **kwargs)
