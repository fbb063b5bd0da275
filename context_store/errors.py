"""One exception tree for freshcontext.

    FreshContextError
    ├── ConfigError          settings file or value is wrong (which key, what was expected)
    ├── SourceError          a source cannot be read as a whole (root missing or unmounted)
    ├── InputRejected        one input file or record is unusable; carries a stable ``reason`` code
    ├── NotFound             an id (document, version, user, trace, question) does not exist
    │   └── UnknownUser
    ├── InvalidRequest       a caller's request is malformed (empty query, bad ``as_of``, k out of range)
    └── StoreError           SQL and vector stores disagree in a way the caller should see
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FreshContextError",
    "InputRejected",
    "InvalidRequest",
    "NotFound",
    "SourceError",
    "StoreError",
    "UnknownUser",
]


class FreshContextError(Exception):
    """Base class of every error freshcontext raises on purpose."""


class ConfigError(FreshContextError):
    pass


class SourceError(FreshContextError):
    pass


class InputRejected(FreshContextError):
    """An input is skipped; ``reason`` is a short stable code, ``detail`` says what to fix."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class NotFound(FreshContextError):
    pass


class UnknownUser(NotFound):
    pass


class InvalidRequest(FreshContextError):
    pass


class StoreError(FreshContextError):
    pass
