"""The HTTP floor for bench/latency.py: the same server stack doing no retrieval work.

FastAPI + uvicorn, a sync handler (as ``/v1/retrieve`` is), API-key check, the request body
validated by a pydantic model and a response of about the same size as a real one. What
this serves per second with the same clients and workers is the ceiling any retrieval
work is subtracted from.

With ``FRESHCONTEXT_FLOOR_HOME`` set, the handler also encodes the query with the encoder
``/v1/retrieve`` uses for that home (ONNX, the query cache off): the encode floor. No
retrieval can serve faster than this, whatever its search and bookkeeping cost.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

app = FastAPI()
_ENCODER: Any = None
if os.environ.get("FRESHCONTEXT_FLOOR_HOME"):
    from context_store.index.embed.query_encoder import build_query_encoder
    from context_store.store.context_store import ContextStore

    _home = Path(os.environ["FRESHCONTEXT_FLOOR_HOME"])
    _settings = ContextStore.open(_home).settings
    _ENCODER = build_query_encoder(_settings.embedding, _settings.retrieval.query_encoder, _home, cache_size=0)
    _ENCODER.encode(["warm up"])
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
    if _ENCODER is not None:
        _ENCODER.encode([body.query])
    return {"results": [_RESULT] * body.k, "confidence": 0.5, "decision": "answer", "reasons": [], "trace_id": "tr-0", "timings_ms": {}}
