"""One exception tree for freshcontext.

    FreshContextError
    ├── ConfigError          settings file or value is wrong (which key, what was expected)
    ├── SourceError          a source cannot be read as a whole (root missing or unmounted)
    ├── InputRejected        one input file or record is unusable; carries a stable ``reason`` code
    ├── NotFound             an id (document, version, user, trace, question) does not exist
    │   ├── UnknownUser
    │   ├── UnknownQuestion
    │   ├── UnknownTrace
    │   └── UnknownConversation
    ├── InvalidRequest       a caller's request is malformed (empty query, bad ``as_of``, k out of range)
    │   └── TooLarge         a request is over a size bound (turns, characters); ``code`` says which
    ├── QuestionConflict     a routed question is not in a state that allows this; ``code`` says which
    ├── WebhookRejected      a signed delivery must not be processed; ``reason`` code and HTTP ``status``
    ├── OutcomeRejected      an outcome report cannot be stored; ``code`` and HTTP ``status`` say why
    ├── TooFewOutcomes       too few labelled outcomes to fit a calibrator; says how many it needs
    └── StoreError           SQL and vector stores disagree in a way the caller should see

The HTTP adapter maps each of these to one status and error code in one table
(``service/errors.py``); the CLI prints the message and exits non-zero.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "FreshContextError",
    "InputRejected",
    "InvalidRequest",
    "NotFound",
    "OutcomeRejected",
    "QuestionConflict",
    "SourceError",
    "StoreError",
    "TooFewOutcomes",
    "TooLarge",
    "UnknownConversation",
    "UnknownQuestion",
    "UnknownTrace",
    "UnknownUser",
    "WebhookRejected",
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


class UnknownQuestion(NotFound):
    pass


class UnknownTrace(NotFound):
    pass


class UnknownConversation(NotFound):
    pass


class InvalidRequest(FreshContextError):
    pass


class TooLarge(InvalidRequest):
    """A request over a size bound; ``code`` names it (``transcript_too_large``, ``history_too_large``)."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class QuestionConflict(FreshContextError):
    """The question is not in a state that allows this; ``code``: ``already_answered`` or ``invalid_transition``."""

    def __init__(self, message: str, code: str = "invalid_transition") -> None:
        super().__init__(message)
        self.code = code


class WebhookRejected(FreshContextError):
    """A delivery that must not be processed; ``reason`` is a stable code, ``status`` the HTTP status."""

    def __init__(self, reason: str, detail: str, status: int = 400) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.status = status


class OutcomeRejected(FreshContextError):
    """An outcome report that is not stored; ``code`` is stable (``invalid_csat``, ``outcome_in_future``,
    ``too_many_outcomes``, ...), ``status`` the HTTP status the API answers with."""

    def __init__(self, code: str, detail: str, status: int = 400) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.status = status


class TooFewOutcomes(FreshContextError):
    """Fitting a calibrator was refused: ``needed`` labelled outcomes are required, ``found`` exist."""

    def __init__(self, detail: str, *, needed: int, found: int) -> None:
        super().__init__(detail)
        self.needed = needed
        self.found = found


class StoreError(FreshContextError):
    pass
