"""Transitional: ``pipeline/sensors.py`` still imports the gate's predicates from here.

They live in ``context_store.measure.gate`` (the candidate build in ``context_store.index.candidate``).
Delete this module once that import points there.
"""

from context_store.measure.gate import decision_since_promotion, measured_since_promotion, pending_change

__all__ = ["decision_since_promotion", "measured_since_promotion", "pending_change"]
