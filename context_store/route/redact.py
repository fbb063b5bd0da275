"""Customer text made fit to suggest as knowledge: personal details replaced, one line, no Markdown.

A routed question's text is working memory for the person answering; it may hold a name,
an email, card digits, an order number, or text written to look like policy. When staff
publish an answer, the question it answers is one staff wrote or confirmed. ``redact``
makes the suggestion they start from: emails, card and phone numbers, and the id patterns
of ``routing.redact_patterns`` (``{order: "ORD-[0-9]+"}``) become ``[email]``, ``[card]``,
``[phone]``, ``[order]``. ``one_line`` is what any kept text goes through before it is
written into a Markdown document: whitespace collapsed to single spaces, and a character
that would open a Markdown block (a heading, a quote, a list, a fence, HTML) escaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["one_line", "redact"]

# Bounded repetitions only: these run on every suggestion and must stay linear.
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]{1,63}(?:\.[A-Za-z0-9-]{1,63}){0,8}\.[A-Za-z]{2,24}")
_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_PHONE = re.compile(r"(?<![\w+])\+?\d[\d ().-]{6,18}\d(?!\w)")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_BLOCK_START = re.compile(r"^(?:[#>*+=|`~<-]|\d{1,9}[.)])")


def redact(text: str, patterns: Mapping[str, str] | None = None) -> str:
    """``text`` with emails, card numbers, phone numbers and each configured ``{name: pattern}`` replaced by ``[name]``."""
    out = _EMAIL.sub("[email]", text)
    out = _CARD.sub("[card]", out)
    out = _PHONE.sub(_phone, out)
    for name, pattern in (patterns or {}).items():
        out = re.sub(pattern, f"[{name}]", out)
    return one_line(out)


def _phone(match: re.Match[str]) -> str:
    found = match.group(0)
    if _DATE.match(found) or sum(c.isdigit() for c in found) < 9:  # a date, a short number: not a phone
        return found
    return "[phone]"


def one_line(text: str, limit: int = 500) -> str:
    """One line of plain text: no newlines, no Markdown block at its start, at most ``limit`` characters."""
    line = " ".join(text.split())[:limit]
    return "\\" + line if _BLOCK_START.match(line) else line
