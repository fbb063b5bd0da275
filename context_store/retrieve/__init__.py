"""Step 5: the retriever (current and as-of), dense and text search, fusion, rerank, confidence features.

    retriever   ``Retriever``: one request, current state (dense + full text, fused, checked against SQL)
    as_of       point-in-time retrieval from SQL alone; ``parse_as_of``
    filters     request filters, as a LanceDB predicate, a snapshot row mask or a per-document test
    features    the confidence features of one ranking
    result      ``Hit``, ``UserFact``, ``RetrievalResult``
    dense_index the in-memory dense snapshot; text_index its BM25; fusion; reranker
"""

from context_store.retrieve.as_of import parse_as_of
from context_store.retrieve.dense_index import DenseIndex
from context_store.retrieve.filters import FILTER_KEYS
from context_store.retrieve.reranker import load_reranker
from context_store.retrieve.result import Hit, RetrievalResult, UserFact
from context_store.retrieve.retriever import MAX_K, MAX_QUERY_CHARS, MODES, Retriever, retrieve

__all__ = [
    "FILTER_KEYS",
    "MAX_K",
    "MAX_QUERY_CHARS",
    "MODES",
    "DenseIndex",
    "Hit",
    "RetrievalResult",
    "Retriever",
    "UserFact",
    "load_reranker",
    "parse_as_of",
    "retrieve",
]
