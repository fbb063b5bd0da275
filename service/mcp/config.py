"""The ``mcp:`` section of ``freshcontext.yaml``: who may reach ``/mcp`` and how often changes are looked for.

``allowed_hosts`` are the ``Host`` headers the streamable-HTTP endpoint answers (the SDK's
DNS-rebinding guard; ``host:*`` allows any port, ``*`` turns the guard off). The default is
localhost only, which is right on one machine and wrong behind a real hostname: a deployment
lists its names here or in ``FRESHCONTEXT_MCP_ALLOWED_HOSTS`` (comma-separated), read when the
app is built, never at import.
"""

from __future__ import annotations

import os

from pydantic import BaseModel, Field, ValidationError

from context_store.errors import ConfigError
from context_store.settings import Settings

__all__ = ["ENV_ALLOWED_HOSTS", "ENV_ALLOWED_ORIGINS", "LOCALHOST", "McpConfig", "mcp_config"]

ENV_ALLOWED_HOSTS = "FRESHCONTEXT_MCP_ALLOWED_HOSTS"
ENV_ALLOWED_ORIGINS = "FRESHCONTEXT_MCP_ALLOWED_ORIGINS"
LOCALHOST = ["127.0.0.1:*", "localhost:*", "[::1]:*", "127.0.0.1", "localhost"]


class McpConfig(BaseModel):
    allowed_hosts: list[str] = Field(default_factory=lambda: list(LOCALHOST))
    allowed_origins: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*"])
    # how often the documents someone subscribed to are looked at (one indexed SQL read of those ids)
    notify_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
    max_request_bytes: int = Field(default=1_048_576, ge=65_536)  # a 200-turn transcript fits
    session_idle_timeout_seconds: float | None = Field(default=1800.0, gt=0)

    @property
    def host_check(self) -> bool:
        """False when ``*`` is allowed: the operator put another guard (a proxy) in front."""
        return "*" not in self.allowed_hosts


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    return [h.strip() for h in raw.split(",") if h.strip()] if raw else None


def mcp_config(settings: Settings) -> McpConfig:
    """The validated ``mcp:`` settings; hosts and origins from the environment are added to the file's."""
    try:
        config = McpConfig.model_validate(settings.mcp or {})
    except ValidationError as exc:
        raise ConfigError(f"{settings.home / 'freshcontext.yaml'}: mcp: {exc}") from exc
    for env, field in ((ENV_ALLOWED_HOSTS, "allowed_hosts"), (ENV_ALLOWED_ORIGINS, "allowed_origins")):
        extra = _env_list(env)
        if extra:
            setattr(config, field, list(dict.fromkeys([*getattr(config, field), *extra])))
    return config
