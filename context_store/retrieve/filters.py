"""Request filters (``kinds``, ``sources``, ``doc_ids``): checked once, then applied the same
way by every ranker — as a LanceDB ``where`` clause, a row mask over the dense snapshot, or a
per-document test for point-in-time retrieval."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from context_store.errors import InvalidRequest
from context_store.store.vector_index import quote

__all__ = ["FILTER_KEYS", "check_filters", "lance_where", "matches", "row_mask"]

FILTER_KEYS = ("kinds", "sources", "doc_ids")


def check_filters(filters: Mapping[str, Any] | None) -> dict[str, list[str]]:
    """The request's filters as lists of strings; an unknown key or an empty value is the caller's mistake."""
    if not filters:
        return {}
    out: dict[str, list[str]] = {}
    for key, value in filters.items():
        if key not in FILTER_KEYS:
            raise InvalidRequest(f"unknown filter {key!r}; known filters: {', '.join(FILTER_KEYS)}")
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            raise InvalidRequest(f"filter {key!r} must be a non-empty string or list of non-empty strings")
        out[key] = values
    return out


def lance_where(filters: dict[str, list[str]]) -> str | None:
    """The filters as a LanceDB SQL predicate over ``company_chunks`` (None: no filter)."""
    clauses = []
    for key, column in (("kinds", "kind"), ("doc_ids", "doc_id")):
        if key in filters:
            clauses.append(f"{column} IN ({', '.join(quote(v) for v in filters[key])})")
    if "sources" in filters:
        clauses.append("(" + " OR ".join(f"starts_with(doc_id, {quote(s + '/')})" for s in filters["sources"]) + ")")
    return " AND ".join(clauses) or None


def matches(filters: dict[str, list[str]], kind: str, doc_id: str) -> bool:
    """Whether a document of ``kind`` with ``doc_id`` (``source/path``) passes the filters."""
    if "kinds" in filters and kind not in filters["kinds"]:
        return False
    if "doc_ids" in filters and doc_id not in filters["doc_ids"]:
        return False
    if "sources" in filters and doc_id.split("/", 1)[0] not in filters["sources"]:
        return False
    return True


def row_mask(filters: dict[str, list[str]], kinds: list[str], doc_ids: list[str]) -> np.ndarray:
    """One bool per snapshot row: the rows the filters let through."""
    return np.fromiter((matches(filters, kind, doc) for kind, doc in zip(kinds, doc_ids)), dtype=bool, count=len(kinds))
