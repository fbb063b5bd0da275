"""How sure a retrieval is: features of the ranking, mapped to a calibrated probability.

Features (computed in ``retrieval._features``):

* ``dense_top``: cosine of the best document; ``dense_margin``: its lead over the second
  distinct document;
* ``text_top`` (log1p of the best BM25 score) and ``text_ratio`` (2nd / 1st BM25 score);
* ``agreement``: 1 / rank of the dense top chunk in the full-text ranking (0: absent);
* ``top_age_days``: log1p of the age in days of the top source (freshness).

``freshcontext calibrate --beir DIR`` fits a logistic regression of "a relevant document
is in the top k" on these features (L2-regularised, Newton's method, standardised inputs)
and stores it as ``<home>/calibrator.json``. The output is a continuous probability, so a
threshold on it does not tie many queries (as thresholding an isotonic step would).

Without a calibrator the **conservative default** applies::

    confidence = 0.8 * clip((dense_top - 0.45) / 0.40, 0, 1) * clip(0.5 + dense_margin / 0.10, 0.5, 1)

It never exceeds 0.8, is 0 below a cosine of 0.45 (all-MiniLM-L6-v2 puts unrelated texts
there), and halves when the two best documents are near-ties. With the default threshold
0.5 an uncalibrated deployment answers only on a clear, strong dense match and escalates
the rest: fitting a calibrator on your own labelled questions is how to answer more.

**The threshold travels with the calibrator.** ``freshcontext calibrate --outcomes`` (and
``freshcontext demo``, on the demo's golden set) choose the threshold that reaches a target
answer precision on the data the calibrator was fitted on and store it in the file
(``threshold``, ``target_precision``); ``respond()`` then decides with it instead of
``retrieval.confidence_threshold``. A calibrator without one (``calibrate --beir``, older
files) leaves the configured threshold in force. The running API reloads the file when it
changes (``service/state.py``), so a new calibrator and its threshold apply without a restart.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from context_store.errors import ConfigError

__all__ = ["CALIBRATOR_FILE", "FEATURES", "Calibrator", "default_confidence", "feature_vector", "fit_calibrator", "load_calibrator"]

CALIBRATOR_FILE = "calibrator.json"
FEATURES = ["dense_top", "dense_margin", "text_top", "text_ratio", "agreement", "top_age_days"]


def feature_vector(features: dict[str, float]) -> np.ndarray:
    # Heavy-tailed inputs (BM25 scores, ages) are log-compressed so one outlier cannot dominate.
    return np.asarray(
        [
            features.get("dense_top", 0.0),
            features.get("dense_margin", 0.0),
            math.log1p(max(0.0, features.get("text_top", 0.0))),
            features.get("text_ratio", 0.0),
            features.get("agreement", 0.0),
            math.log1p(max(0.0, features.get("top_age_days", 0.0))),
        ],
        dtype=np.float64,
    )


def default_confidence(features: dict[str, float]) -> float:
    strength = min(1.0, max(0.0, (features.get("dense_top", 0.0) - 0.45) / 0.40))
    separation = min(1.0, max(0.5, 0.5 + features.get("dense_margin", 0.0) / 0.10))
    return 0.8 * strength * separation


@dataclass
class Calibrator:
    mean: list[float]
    scale: list[float]
    coef: list[float]
    intercept: float
    features: list[str] = field(default_factory=lambda: list(FEATURES))
    k: int = 10
    mode: str = "hybrid"
    model: str = ""
    fitted_on: str = ""
    samples: int = 0
    positive_rate: float = 0.0
    heldout_ece: float | None = None
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())
    kind: str = "logistic"
    threshold: float | None = None  # when set, respond() decides with it instead of retrieval.confidence_threshold
    target_precision: float | None = None  # the answer precision the threshold was chosen for
    evaluation: dict[str, Any] | None = None  # held-out numbers of the fit that produced it (calibrate --outcomes)

    def predict(self, features: dict[str, float]) -> float:
        x = (feature_vector(features) - np.asarray(self.mean)) / np.asarray(self.scale)
        z = float(x @ np.asarray(self.coef) + self.intercept)
        return 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, z))))

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")
        tmp.replace(target)
        return target


def load_calibrator(path: str | Path) -> Calibrator | None:
    """The stored calibrator, ``None`` when there is none; a damaged file is an error, not a silent default."""
    source = Path(path)
    if not source.exists():
        return None
    try:
        data: dict[str, Any] = json.loads(source.read_text(encoding="utf-8"))
        calibrator = Calibrator(**data)
    except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{source}: not a calibrator written by `freshcontext calibrate` ({exc})") from exc
    if calibrator.features != FEATURES or len(calibrator.coef) != len(FEATURES):
        raise ConfigError(f"{source}: fitted on features {calibrator.features}, this version uses {FEATURES}; run calibrate again")
    if calibrator.threshold is not None and not 0.0 <= calibrator.threshold <= 1.0:
        raise ConfigError(f"{source}: threshold {calibrator.threshold} is outside [0, 1]; run calibrate again")
    return calibrator


def fit_calibrator(features: list[dict[str, float]], outcomes: list[bool], *, l2: float = 1.0, **info: Any) -> Calibrator:
    """Logistic regression by Newton's method (IRLS) with an L2 penalty on the coefficients."""
    if len(features) != len(outcomes):
        raise ValueError(f"{len(features)} feature rows but {len(outcomes)} outcomes")
    if len(features) < 10:
        raise ValueError(f"need at least 10 labelled queries to calibrate, got {len(features)}")
    x = np.stack([feature_vector(f) for f in features])
    y = np.asarray(outcomes, dtype=np.float64)
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0  # a constant feature carries no information; keep it harmless
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    penalty = np.eye(z.shape[1]) * l2
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -50, 50)))
        gradient = z.T @ (p - y) + penalty @ w
        hessian = (z * (p * (1 - p))[:, None]).T @ z + penalty
        step = np.linalg.solve(hessian + 1e-9 * np.eye(len(w)), gradient)
        w -= step
        if np.max(np.abs(step)) < 1e-8:
            break
    return Calibrator(
        mean=mean.tolist(), scale=scale.tolist(), coef=w[:-1].tolist(), intercept=float(w[-1]),
        samples=len(y), positive_rate=float(y.mean()), **info,
    )
