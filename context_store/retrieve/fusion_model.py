"""Learned fusion: a small linear model over per-candidate evidence, trained across data sets.

The shipped weights (``fusion_weights.json``) were fitted by ``bench/train_fusion.py`` on every
open labelled set at once, after the same recipe was validated leave-one-set-out (fit on all
sets but one, measure on the one left out), so the figures that justify it come from data it
was not fitted on. The file records its provenance: the sets, the date, the code commit and
the leave-one-set-out figures. It also holds the full-text ranker's weight for the title and
heading trail (``heading_weight``), chosen by the same protocol.

The model scores each candidate chunk as ``sum(weights * (features - mean) / scale)`` over the
features it names (``evidence.FEATURES``); a candidate's document is what nDCG counts, and
document-level features let several matching chunks of one document add up.

The query's text coverage gates the ``gated`` features: coverage is the best BM25 over the
most the query could score (``TermIndex.query_mass``), and the gate ``1 / (1 + exp(-(coverage
- gate_center) / gate_width))`` lets text evidence count only where the best text match covers
enough of the query. Normalised by the top score alone, the best match is 1.0 even when it
shares one common word with a ten-word question; on StackFAQ (paraphrased questions, most of
their words in no relevant answer) such matches pulled the fused ranking below pure dense
search. Where the text ranker cannot say how much a query could score (LanceDB's FTS),
``coverage_prior`` stands in: the median coverage on the training sets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from context_store.errors import ConfigError
from context_store.retrieve.evidence import FEATURES, candidate_features
from context_store.retrieve.pool import Pool, sort_scored

__all__ = ["DEFAULT_WEIGHTS", "FusionModel", "learned_fusion", "learned_scores", "load_fusion_model", "text_coverage"]

DEFAULT_WEIGHTS = Path(__file__).with_name("fusion_weights.json")


def text_coverage(text: np.ndarray, text_mass: float | None, prior: float) -> float:
    """The best BM25 over the most the query could score (``prior`` when that is unknown; 0 without a match)."""
    top = float(np.max(text)) if len(text) else 0.0
    if top <= 0:
        return 0.0
    return min(1.0, top / text_mass) if text_mass else prior


@dataclass(frozen=True)
class FusionModel:
    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    heading_weight: float = 0.0
    gated: tuple[str, ...] = ()  # features multiplied by the coverage gate
    gate_center: float = 0.0
    gate_width: float = 0.05
    coverage_prior: float = 1.0  # coverage assumed when the text ranker cannot say how much a query could score
    provenance: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = [f for f in (*self.features, *self.gated) if f not in FEATURES]
        if unknown:
            raise ConfigError(f"fusion model names unknown features {unknown}; known: {', '.join(FEATURES)}")
        if not len(self.features) == len(self.mean) == len(self.scale) == len(self.weights):
            raise ConfigError("fusion model: features, mean, scale and weights must have one entry per feature")
        if not set(self.gated) <= set(self.features) or self.gate_width <= 0:
            raise ConfigError("fusion model: gated features must be among its features, and gate_width above 0")

    def gate(self, coverage: float) -> float:
        """How far text evidence counts for a query whose best text match covers ``coverage`` of it."""
        return float(1.0 / (1.0 + np.exp(-(coverage - self.gate_center) / self.gate_width))) if self.gated else 1.0

    def columns(self, matrix: np.ndarray, coverage: float) -> np.ndarray:
        """The model's features from a ``candidate_features`` matrix, gated ones times the query's gate."""
        return self._gated(matrix[:, [FEATURES.index(f) for f in self.features]], coverage)

    def _gated(self, cols: np.ndarray, coverage: float) -> np.ndarray:
        if self.gated:
            g = self.gate(coverage)
            cols = cols * np.array([g if f in self.gated else 1.0 for f in self.features])
        return cols

    def score(self, matrix: np.ndarray, coverage: float = 1.0) -> np.ndarray:
        """Scores for a ``candidate_features`` matrix (all of ``FEATURES``, one row per candidate) of one query."""
        return ((self.columns(matrix, coverage) - self.mean) / self.scale) @ self.weights

    def score_own(self, cols: np.ndarray, coverage: float = 1.0) -> np.ndarray:
        """Scores for the model's own feature columns, in ``features`` order
        (``candidate_features(..., names=model.features)``): what serving computes."""
        return ((self._gated(cols, coverage) - self.mean) / self.scale) @ self.weights

    def as_json(self) -> dict[str, Any]:
        return {
            "features": list(self.features), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
            "weights": self.weights.tolist(), "heading_weight": self.heading_weight, "gated": list(self.gated),
            "gate_center": self.gate_center, "gate_width": self.gate_width, "coverage_prior": self.coverage_prior,
            "provenance": self.provenance,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FusionModel:
        return cls(
            features=tuple(data["features"]), mean=np.asarray(data["mean"], dtype=np.float64),
            scale=np.asarray(data["scale"], dtype=np.float64), weights=np.asarray(data["weights"], dtype=np.float64),
            heading_weight=float(data.get("heading_weight", 0.0)), gated=tuple(data.get("gated") or ()),
            gate_center=float(data.get("gate_center", 0.0)), gate_width=float(data.get("gate_width", 0.05)),
            coverage_prior=float(data.get("coverage_prior", 1.0)), provenance=dict(data.get("provenance") or {}),
        )

    def save(self, path: Path) -> Path:
        path.write_text(json.dumps(self.as_json(), indent=2) + "\n", encoding="utf-8")
        return path


@lru_cache(maxsize=8)
def load_fusion_model(path: str | Path | None = None) -> FusionModel:
    """The fusion weights at ``path`` (default: the shipped file), read once per process."""
    where = Path(path) if path is not None else DEFAULT_WEIGHTS
    try:
        return FusionModel.from_json(json.loads(where.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"fusion weights {where} unusable ({exc}); expected JSON with features, mean, scale, weights") from exc


def learned_scores(pool: Pool, model: FusionModel, text_mass: float | None = None) -> np.ndarray:
    """``model``'s score of each candidate of ``pool``; ``text_mass``: the most the query could score
    on the text side (``TermIndex.query_mass``), None when unknown."""
    if not len(pool):
        return np.zeros(0)
    cos = pool.cos
    missing = np.isnan(cos)
    if missing.any():  # a candidate the dense side did not score counts as the worst one it did
        cos = np.where(missing, np.nanmin(cos) if not missing.all() else 0.0, cos)
    text = np.nan_to_num(pool.text, nan=0.0)
    coverage = text_coverage(text, text_mass, model.coverage_prior)
    return model.score_own(candidate_features(cos, text, pool.doc, model.features), coverage)


def learned_fusion(candidates: list[Any], docs: Sequence[str], model: FusionModel, text_mass: float | None = None) -> list[Any]:
    """``candidates`` (``fusion.Candidate``) scored by ``model`` and sorted, best first (``learned_scores``)."""
    return sort_scored(candidates, learned_scores(Pool.of(candidates, docs), model, text_mass))
