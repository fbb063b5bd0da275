"""The HTTP floor for bench/latency.py: the same server stack doing no retrieval work.

FastAPI + uvicorn, a sync handler (as ``/v1/retrieve`` is), API-key check, the request body
validated by a pydantic model and a response of about the same size as a real one. What
this serves per second with the same clients and workers is the ceiling any retrieval
work is subtracted from.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

app = FastAPI()
_RESULT = {
    "doc_id": "bench/doc-000000.md", "version_id": "v-bench-000000", "chunk_id": "bench/doc-000000.md#0", "title": "Bench document 0",
    "text": "x" * 600, "score": 0.5, "source_path": "/bench/bench/doc-000000.md", "source_changed_at": "2026-11-28T00:00:00+00:00",
}


class Body(BaseModel):
    query: str = Field(min_length=1, max_length=2000)
    k: int = Field(10, ge=1, le=100)
    user_id: str | None = None


@app.post("/v1/retrieve")
def retrieve(body: Body, x_api_key: str | None = Header(None)) -> dict[str, Any]:
    if not x_api_key:
        raise HTTPException(401)
    return {"results": [_RESULT] * body.k, "confidence": 0.5, "decision": "answer", "reasons": [], "trace_id": "tr-0", "timings_ms": {}}
