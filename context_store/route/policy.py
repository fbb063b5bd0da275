"""The escalation policy's settings: the ``routing:`` section of ``freshcontext.yaml``, with working defaults.

Which phrases and examples mean "a person, please" or a sensitive topic, the repeat-contact
window, the freshness SLAs of sources, grouping of near-duplicate questions, the staff
webhook's and the outbound notification's secrets and limits. Secrets may come from the
environment (``FRESHCONTEXT_STAFF_WEBHOOK_SECRETS``, ``FRESHCONTEXT_OUTBOUND_WEBHOOK_SECRETS``,
``FRESHCONTEXT_OUTBOUND_URL``), read when the policy is loaded, never at import.
"""

from __future__ import annotations

import os
import re

from pydantic import BaseModel, Field, ValidationError, field_validator

from context_store.errors import ConfigError
from context_store.settings import Settings

__all__ = ["DEFAULT_HUMAN_EXAMPLES", "DEFAULT_HUMAN_PHRASES", "DEFAULT_TOPICS", "RoutingConfig", "SensitiveTopic", "routing_config"]


class SensitiveTopic(BaseModel):
    name: str
    phrases: list[str] = Field(default_factory=list)
    examples: list[str] = Field(default_factory=list)


DEFAULT_TOPICS = [
    SensitiveTopic(
        name="refund_dispute",
        phrases=["chargeback", "dispute the charge", "dispute this charge", "refund was denied", "refund denied", "refused my refund"],
        examples=[
            "you refused my refund and I want to dispute it",
            "I am filing a chargeback with my bank",
            "the refund you gave me is wrong and I dispute it",
        ],
    ),
    SensitiveTopic(
        name="fraud",
        phrases=["fraud", "fraudulent", "scam", "unauthorized charge", "unauthorised charge", "identity theft", "hacked"],
        examples=[
            "someone used my card without permission",
            "there are charges on my account I did not make",
            "somebody stole my identity and opened an account",
            "my account was hacked and someone placed orders",
        ],
    ),
    SensitiveTopic(
        name="financial_distress",
        phrases=["can't afford", "cannot afford", "can't pay", "cannot pay", "unable to pay", "bankrupt", "bankruptcy", "lost my job", "debt collector"],
        examples=[
            "I lost my job and cannot pay my bills",
            "I have no money left to pay for this",
            "I am in serious financial trouble",
        ],
    ),
    SensitiveTopic(
        name="legal_threat",
        phrases=["lawyer", "my attorney", "lawsuit", "sue", "suing", "legal action", "small claims court", "consumer protection agency"],
        examples=[
            "I will take legal action against your company",
            "my lawyer will contact you",
            "I am going to report you to the authorities",
        ],
    ),
    SensitiveTopic(
        name="account_lockout",
        phrases=["locked out", "account locked", "account is locked", "account suspended", "account was suspended"],
        examples=[
            "I am locked out of my account",
            "my account has been blocked and I cannot log in",
            "you suspended my account for no reason",
        ],
    ),
]

DEFAULT_HUMAN_PHRASES = [
    # requests, not mentions: "call me Mike" or "are you a human?" must not route to a person
    "talk to a human", "speak to a human", "talk to a person", "speak to a person", "speak with a person",
    "talk to someone", "speak to someone", "speak with someone", "real person", "human being", "human agent",
    "live agent", "live person", "talk to an agent", "speak to an agent", "speak with an agent",
    "customer service representative", "transfer me to", "connect me to an agent", "connect me with an agent",
    "call me back", "get me a human", "human please", "on the line", "real agent", "actual person", "your manager",
    "a supervisor",
]
DEFAULT_HUMAN_EXAMPLES = [
    "I want to talk to a real person",
    "let me speak to a human agent please",
    "connect me with customer service staff",
    "stop the bot, I need a person",
    "can I get someone from support on the phone",
    "I want a real support agent, not a chatbot",
]


class RoutingConfig(BaseModel):
    """The ``routing:`` section of ``freshcontext.yaml``; every field has a working default."""

    repeat_window_hours: float = Field(default=48.0, gt=0)
    repeat_similarity: float = Field(default=0.72, ge=0, le=1)
    human_phrases: list[str] = Field(default_factory=lambda: list(DEFAULT_HUMAN_PHRASES))
    human_examples: list[str] = Field(default_factory=lambda: list(DEFAULT_HUMAN_EXAMPLES))
    human_similarity: float = Field(default=0.65, ge=0, le=1)
    sensitive_topics: list[SensitiveTopic] = Field(default_factory=lambda: [t.model_copy() for t in DEFAULT_TOPICS])
    sensitive_similarity: float = Field(default=0.68, ge=0, le=1)
    # Maximum age of the best source's content, in days, by source name ("default" for the rest).
    source_max_age_days: dict[str, float] = Field(default_factory=lambda: {"default": 365.0})
    # Near-duplicate open questions are grouped above this cosine similarity.
    group_similarity: float = Field(default=0.85, ge=0, le=1)
    # Inbound staff webhook.
    webhook_secrets: list[str] = Field(default_factory=list)
    webhook_tolerance_seconds: int = Field(default=300, ge=1)
    max_webhook_body_bytes: int = Field(default=64 * 1024, ge=256)
    max_answer_chars: int = Field(default=20_000, ge=10)
    # Outbound notification of routed questions.
    outbound_url: str | None = None
    outbound_secrets: list[str] = Field(default_factory=list)
    outbound_max_attempts: int = Field(default=10, ge=1)
    outbound_backoff_seconds: float = Field(default=2.0, gt=0)
    outbound_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    outbound_timeout_seconds: float = Field(default=10.0, gt=0)
    # Which company source staff answers are written into (default: the first of kind staff_answer).
    staff_source: str | None = None
    # Index a stored answer right away in the serving process (the warm path); when false, the
    # watcher/sensor or the next ingest picks the file up.
    index_answers_inline: bool = True
    # Ids redacted from the question staff are offered to publish, {name: regular expression}:
    # {order: "ORD-[0-9]+"} turns "ORD-1234" into "[order]" (emails, card and phone numbers always).
    redact_patterns: dict[str, str] = Field(default_factory=dict)

    @field_validator("redact_patterns")
    @classmethod
    def _patterns_compile(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"redact_patterns.{name}: {pattern!r} is not a regular expression ({exc})") from exc
        return value


def routing_config(settings: Settings) -> RoutingConfig:
    """Validate ``settings.routing``; secrets may also come from the environment (never from the file only)."""
    data = dict(settings.routing or {})
    for key, env in (("webhook_secrets", "FRESHCONTEXT_STAFF_WEBHOOK_SECRETS"), ("outbound_secrets", "FRESHCONTEXT_OUTBOUND_WEBHOOK_SECRETS")):
        if os.environ.get(env):
            data[key] = os.environ[env].replace(",", " ").split()
    if os.environ.get("FRESHCONTEXT_OUTBOUND_URL"):
        data["outbound_url"] = os.environ["FRESHCONTEXT_OUTBOUND_URL"]
    try:
        return RoutingConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{settings.home / 'freshcontext.yaml'}: routing: {exc}") from exc
