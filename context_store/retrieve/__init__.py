"""Step 5 of the data flow: current (or as-of) cited context for a question. Dense and full-text
search over the company chunks, fused and optionally reranked; the user's own state; and
the features the confidence is computed from.
"""

from context_store.retrieve.dense_index import DenseIndex
from context_store.retrieve.reranker import load_reranker
from context_store.retrieve.retriever import MODES, RetrievalResult, Retriever, parse_as_of, retrieve

__all__ = [
    "MODES",
    "DenseIndex",
    "RetrievalResult",
    "Retriever",
    "load_reranker",
    "parse_as_of",
    "retrieve",
]
