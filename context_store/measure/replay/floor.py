"""The embedding floor: the lag a path would have if indexing did nothing but embed the changed chunks."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from context_store.index.embed.protocol import Embedder
from context_store.index.plan import cheapest_first
from context_store.measure.replay.stats import rounded_percentile

__all__ = ["EmbedFloor"]


@dataclass
class EmbedFloor:
    """A measured lower bound for a path's lag: what each changed file would wait if indexing
    did nothing but embed the chunk texts its commit made new, with the path's own embedder.

    Per commit, files are embedded one after another, each in one ``encode`` call, in the
    order an index run takes them (``index.plan.cheapest_first``); a file's floor is the embedding time up to and
    including its own texts. A file with nothing new to embed (a deletion, an edit outside
    every chunk, a text embedded before) has floor 0.
    """

    lags: list[float] = field(default_factory=list)
    commit_lags: list[float] = field(default_factory=list)  # per commit: its slowest file
    seconds: float = 0.0
    chunks: int = 0

    def measure(self, embedder: Embedder, new_texts: dict[str, dict[str, str]]) -> dict[str, float]:
        """Time one commit. ``new_texts``: doc_id -> (chunk hash -> text new in this commit) for
        every document whose lag the commit counts, empty when there is nothing to embed."""
        cost = {doc_id: sum(len(t) for t in texts.values()) for doc_id, texts in new_texts.items()}
        floors: dict[str, float] = {}
        embedded: set[str] = set()
        elapsed = 0.0
        for doc_id in cheapest_first(cost):
            # a text another file of the commit shares is embedded once, with the cheaper file
            todo = {h: t for h, t in new_texts[doc_id].items() if h not in embedded}
            if todo:
                started = time.perf_counter()
                embedder.encode(list(todo.values()))
                elapsed += time.perf_counter() - started
                embedded |= todo.keys()
            floors[doc_id] = elapsed if new_texts[doc_id] else 0.0
        self.lags.extend(floors.values())
        if floors:
            self.commit_lags.append(max(floors.values()))
        self.seconds += elapsed
        self.chunks += len(embedded)
        return floors

    def summary(self) -> dict[str, Any]:
        return {
            "changes_measured": len(self.lags),
            "lag_p50_s": rounded_percentile(self.lags, 50),
            "lag_p95_s": rounded_percentile(self.lags, 95),
            "lag_max_s": round(max(self.lags), 3) if self.lags else None,
            "per_commit_p95_s": rounded_percentile(self.commit_lags, 95),
            "seconds": round(self.seconds, 3),
            "chunks": self.chunks,
        }
