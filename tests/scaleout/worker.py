"""A separate ingest process for the concurrency and fault tests (fake embedder, small groups).

    python -m tests.scaleout.worker --home H --company DIR --users DIR [--wave-chunks 12] [--slow 0.05]

Runs the same four steps as ``context_store.index.ingest.ingest`` and prints one JSON object with
the reports. ``--go FILE`` lines several workers up: each connects, says it is ready, then waits for FILE;
``--slow`` sleeps per embedded batch so a test can kill the process half-way.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from context_store.index.documents import index_pending_documents  # noqa: E402
from context_store.index.embed import cache as embed_cache  # noqa: E402
from context_store.index.embed.fake import HashingEmbedder  # noqa: E402
from context_store.index.users import index_pending_users  # noqa: E402
from context_store.state.documents import sync_company_sources  # noqa: E402
from context_store.state.user_state import sync_user_sources  # noqa: E402
from context_store.store.context_store import ContextStore  # noqa: E402


class SlowHashingEmbedder(HashingEmbedder):
    """Encodes in small batches and sleeps per batch, like a model on a busy CPU."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def encode(self, texts: list[str]) -> np.ndarray:
        time.sleep(self.delay)
        return super().encode(texts)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--home", required=True)
    parser.add_argument("--company", required=True)
    parser.add_argument("--users", required=True)
    parser.add_argument("--wave-chunks", type=int, default=12, help="chunks per LanceDB commit (1: one document each)")
    parser.add_argument("--user-group", type=int, default=2)
    parser.add_argument("--embed-batch", type=int, default=0, help="embed this many texts per commit (0: default)")
    parser.add_argument("--slow", type=float, default=0.0)
    parser.add_argument("--go", default="", help="touch GO.ready.<pid>, then wait until GO exists")
    args = parser.parse_args()
    store = ContextStore.open(
        args.home,
        company_sources=[{"name": "company", "path": args.company}],
        user_sources=[{"name": "users", "path": args.users}],
    )
    store.engine  # connect and migrate before the start line
    if args.embed_batch:
        embed_cache.EMBED_GROUP = args.embed_batch
    embedder = SlowHashingEmbedder(args.slow) if args.slow else HashingEmbedder()
    if args.go:
        go = Path(args.go)
        go.with_name(f"{go.name}.ready.{os.getpid()}").touch()
        deadline = time.monotonic() + 120
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    company = sync_company_sources(store)
    company_index = index_pending_documents(store, embedder, wave_chunks=args.wave_chunks)
    users = sync_user_sources(store)
    user_index = index_pending_users(store, embedder, group_size=args.user_group)
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "company": company.as_dict(),
                "company_index": company_index.as_dict(),
                "users": users.as_dict(),
                "user_index": user_index.as_dict(),
            }
        )
    )


if __name__ == "__main__":
    main()
