"""The outcome of one check, the same shape for freshness, retrieval, routing, learning and the gate.

Asset checks, the CLI and the promotion gate all show the measured ``value`` beside its
``threshold``, so a failed check says how far off it is, not only that it failed.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CheckOutcome"]


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    detail: str
    value: float | None = None
    threshold: float | None = None
