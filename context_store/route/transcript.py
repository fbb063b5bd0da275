"""A conversation's turns as the agent sends them: checked, bounded, and kept in one shape.

A hand-off carries the whole conversation so the user never plays context courier; a
retrieval may carry its last turns (``history``). Both arrive from outside, so both are
bounded here, once, and a request over a bound gets a ``TooLarge`` error that names the
bound and what to send instead — never a silently cut transcript.

One turn is ``{"role", "text", "at"}``: ``role`` is who spoke (``user``, ``agent``,
``assistant``, ``staff``, ``system``), ``at`` an optional ISO-8601 time kept as text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from context_store._common import as_utc
from context_store.errors import InvalidRequest, TooLarge

__all__ = [
    "MAX_HISTORY_TURNS",
    "MAX_TRANSCRIPT_CHARS",
    "MAX_TRANSCRIPT_TURNS",
    "MAX_TURN_CHARS",
    "ROLES",
    "check_turns",
    "merge_turns",
]

ROLES = ("user", "agent", "assistant", "staff", "system")
MAX_TRANSCRIPT_TURNS = 200  # a hand-off: the whole conversation
MAX_HISTORY_TURNS = 50  # a retrieval: the last turns before the question
MAX_TURN_CHARS = 8_000
MAX_TRANSCRIPT_CHARS = 100_000


def _turn(raw: Any, i: int, what: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise InvalidRequest(f"{what}[{i}] must be an object with role, text and at, got {type(raw).__name__}")
    role, text, at = raw.get("role"), raw.get("text"), raw.get("at")
    if role not in ROLES:
        raise InvalidRequest(f"{what}[{i}].role must be one of {', '.join(ROLES)}, got {role!r}")
    if not isinstance(text, str) or not text.strip():
        raise InvalidRequest(f"{what}[{i}].text must be a non-empty string")
    if len(text) > MAX_TURN_CHARS:
        raise TooLarge(f"{what}[{i}].text has {len(text)} characters; a turn may have at most {MAX_TURN_CHARS}", f"{what}_too_large")
    if isinstance(at, datetime):
        at = as_utc(at).isoformat()
    elif at is not None:
        try:
            at = as_utc(datetime.fromisoformat(str(at))).isoformat()
        except ValueError:
            raise InvalidRequest(f"{what}[{i}].at must be an ISO-8601 time, got {at!r}") from None
    return {"role": role, "text": text, "at": at}


def check_turns(raw: Iterable[Any] | None, *, what: str = "transcript", max_turns: int = MAX_TRANSCRIPT_TURNS) -> list[dict[str, Any]]:
    """The turns in the one stored shape, or ``InvalidRequest``/``TooLarge`` naming the turn and the bound.

    ``what`` names the field in messages and codes (``transcript_too_large``, ``history_too_large``).
    """
    turns = list(raw or [])
    if len(turns) > max_turns:
        raise TooLarge(f"{what} has {len(turns)} turns; at most {max_turns} are accepted: send the last {max_turns}", f"{what}_too_large")
    checked = [_turn(t, i, what) for i, t in enumerate(turns)]
    total = sum(len(t["text"]) for t in checked)
    if total > MAX_TRANSCRIPT_CHARS:
        raise TooLarge(f"{what} has {total} characters in all; at most {MAX_TRANSCRIPT_CHARS} are accepted: send fewer turns",
                       f"{what}_too_large")
    return checked


def merge_turns(kept: list[dict[str, Any]] | None, new: list[dict[str, Any]], *, max_turns: int = MAX_TRANSCRIPT_TURNS) -> list[dict[str, Any]]:
    """``kept`` plus the turns of ``new`` it does not hold yet, the newest ``max_turns`` of them.

    A second press of the red button may send the whole conversation again or only what came
    since; either way staff read every turn once.
    """
    merged = list(kept or [])
    seen = {(t["role"], t["text"], t.get("at")) for t in merged}
    merged += [t for t in new if (t["role"], t["text"], t.get("at")) not in seen]
    merged = merged[-max_turns:]
    while len(merged) > 1 and sum(len(t["text"]) for t in merged) > MAX_TRANSCRIPT_CHARS:
        merged.pop(0)  # the oldest turns go first: the newest are what the person answering needs
    return merged
