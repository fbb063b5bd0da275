"""The evidence trail: what one response served and what came of it (``/v1/traces``), and every version of a document."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from context_store.retrieve import parse_as_of
from context_store.route import get_trace, outcomes_for_trace, replay, trace_dict
from context_store.state import current_version_id, document_versions
from service.deps import AgentOrStaff, StoreDep
from service.schemas import DocumentVersionPublic, DocumentVersions

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["evidence"])


@router.get("/traces/{trace_id}", summary="The evidence trail of one response (an agent key reads its own)")
def trace(
    trace_id: str,
    store: StoreDep,
    who: AgentOrStaff,
    replay_texts: bool = Query(False, alias="replay", description="Rebuild the served texts from the versioned store and verify their hashes."),
) -> dict[str, Any]:
    client = who.name if who.role == "agent" else None  # staff and admin read every trace
    body = replay(store, trace_id, client=client) if replay_texts else trace_dict(get_trace(store, trace_id, client=client))
    return {**body, "outcomes": outcomes_for_trace(store, trace_id)}


@router.get("/documents/{doc_id:path}/versions", response_model=DocumentVersions, summary="Every version of a document")
def versions(
    doc_id: str,
    store: StoreDep,
    _: AgentOrStaff,
    as_of: str | None = Query(None, description="Only the version valid at this ISO-8601 time (with its text)."),
    include_text: bool = Query(False, description="Include each version's full text."),
) -> dict[str, Any]:
    when = parse_as_of(as_of)
    found = document_versions(store, doc_id, as_of=when)
    current = current_version_id(store, doc_id)
    return {
        "doc_id": doc_id, "as_of": when,
        "versions": [
            DocumentVersionPublic(
                version_id=v.version_id, content_hash=v.content_hash, title=v.title, source_path=v.source_path,
                valid_from=v.valid_from, valid_to=v.valid_to, observed_at=v.observed_at, source_mtime=v.source_mtime,
                indexed_at=v.indexed_at, chunk_count=v.chunk_count, current=v.version_id == current,
                text=v.text if include_text or when is not None else None,
            )
            for v in found
        ],
    }
