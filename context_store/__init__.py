"""freshcontext's framework-free core: versioned stores, chunking, embedding, indexing, retrieval.

Nothing in this package imports Dagster or FastAPI; the asset layer (``assets``) and the
composition root (``pipeline``) call into it, never the reverse.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
