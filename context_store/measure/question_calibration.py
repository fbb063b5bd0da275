"""A first calibrator from a golden set: a new home answers what it can before any outcome arrives.

Without a calibrator the conservative default (``route.confidence``) never exceeds 0.8 and the
demo escalated every question, the clear ones too. ``calibrate_on_questions`` runs a team's
labelled questions about the home's own documents through ``respond()`` (nothing recorded,
``routing_eval.respond_all``), labels each by ``routing_eval.answered_right`` (answerable and
its top result one of the expected documents), fits the calibrator and stores the threshold
that reaches the target answer precision on those questions
(``outcome_calibration.fit_with_threshold``). Both are measured on the questions they were
fitted on, so the summary says so; outcomes (``calibrate --outcomes``) replace it with one
judged on held-out answers.
"""

from __future__ import annotations

import numpy as np

from context_store.errors import TooFewOutcomes
from context_store.index.embed.protocol import Embedder
from context_store.measure.outcome_calibration import fit_with_threshold
from context_store.measure.questions import LabelledQuestion
from context_store.measure.routing_eval import decide_all, respond_all
from context_store.route.confidence import Calibrator
from context_store.route.decision import ESCALATE
from context_store.route.policy import routing_config
from context_store.store.context_store import ContextStore

__all__ = ["calibrate_on_questions"]


def calibrate_on_questions(
    store: ContextStore, embedder: Embedder, questions: list[LabelledQuestion], *, name: str, target_precision: float | None = None,
) -> tuple[Calibrator, dict[str, object]]:
    """A calibrator with its threshold, fitted on ``questions``; and what it does on them (answer and escalation rates)."""
    target = target_precision if target_precision is not None else store.settings.outcomes.target_precision
    k = store.settings.quality.k
    responses, right = respond_all(store, embedder, questions, k=k, config=routing_config(store.settings))
    if len(responses) < 10 or right.all() or not right.any():
        raise TooFewOutcomes(f"{name}: {len(responses)} questions, {int(right.sum())} answered right by the top result; a calibrator "
                             "needs at least 10, some answered right and some not", needed=10, found=len(responses))
    features = [dict(r.result.features) for r in responses]
    calibrator = fit_with_threshold(features, right.tolist(), target, k=k, mode=store.settings.retrieval.mode,
                                    model=store.settings.embedding.model, fitted_on=name)
    scores = [calibrator.predict(f) if r.result.results else 0.0 for f, r in zip(features, responses)]
    # decided as respond() will decide with it: the threshold, the outcome signals, nothing found
    escalated = np.array([d.decision == ESCALATE for d in decide_all(responses, scores, [calibrator.threshold or 1.0] * len(scores))])
    summary: dict[str, object] = {
        "questions": len(responses), "answerable": sum(q.answerable for q in questions), "right_on_top": int(right.sum()),
        "threshold": calibrator.threshold, "target_precision": target,
        "escalation_rate": round(float(escalated.mean()), 4), "answer_rate": round(float((~escalated).mean()), 4),
        "answer_precision": round(float(right[~escalated].mean()), 4) if (~escalated).any() else None,
        "measured_on": "the questions it was fitted on",
    }
    calibrator.evaluation = {"golden_set": name, **summary}
    return calibrator, summary
