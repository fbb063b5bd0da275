"""The real service with the fake embedder, for replica tests: ``uvicorn tests.scaleout.hashing_app:app``.

Every replica loads the home from ``FRESHCONTEXT_HOME`` exactly as ``service.asgi`` does; only
the query encoder is the deterministic ``HashingEmbedder`` the test's ingest used.
"""

from context_store.index.embed.fake import HashingEmbedder
from service.app import create_app

app = create_app(embedder=HashingEmbedder())
