"""Resource instances for this environment (home from FRESHCONTEXT_HOME at run time)."""

from __future__ import annotations

from assets.resources import EmbedderResource, StoreResource

__all__ = ["build_resources"]


def build_resources(home: str = "", **store_options: object) -> dict[str, object]:
    return {"store": StoreResource(home=home, **store_options), "embedder": EmbedderResource()}
