"""The HTTP floor for bench/latency.py: the same server stack doing no retrieval work.

FastAPI + uvicorn, a sync handler (as ``/v1/retrieve`` is), API-key check, the request body
validated by a pydantic model and a response of about the same size as a real one. What
this serves per second with the same clients and workers is the ceiling any retrieval
work is subtracted from.

With ``FRESHCONTEXT_FLOOR_HOME`` set, the handler also encodes the query with the encoder
``/v1/retrieve`` uses for that home (ONNX, the query cache off): the encode floor. No
retrieval can serve faster than this, whatever its search and bookkeeping cost.

``FRESHCONTEXT_FLOOR_STAGE`` takes the handler further along ``/v1/retrieve``'s path, with the
parts the server builds for that home (``service.state.Serving``), to show where its time goes:

* ``encode`` (the default): the encode floor;
* ``dense``: the encode, then the served dense index's search for the candidates the
  retriever asks of it (the first ranker of every request);
* ``retrieve``: ``Retriever.retrieve``: both rankers, fusion and SQL's check that each served
  version is current. What ``/v1/retrieve`` adds beyond it is routing, the recorded trace
  and building its response.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Header, HTTPException
from pydantic import BaseModel, Field

from service.compute import one_compute_thread

one_compute_thread()  # as service.asgi does in every worker of the server it stands beside
STAGES = ("encode", "dense", "retrieve")
app = FastAPI()
_ENCODER: Any = None
_STAGE = os.environ.get("FRESHCONTEXT_FLOOR_STAGE", "encode")
if _STAGE not in STAGES:
    raise SystemExit(f"FRESHCONTEXT_FLOOR_STAGE is one of {', '.join(STAGES)}, not {_STAGE!r}")
if _STAGE != "encode" and not os.environ.get("FRESHCONTEXT_FLOOR_HOME"):
    raise SystemExit(f"FRESHCONTEXT_FLOOR_STAGE={_STAGE} needs FRESHCONTEXT_FLOOR_HOME (the home whose index it searches)")
if os.environ.get("FRESHCONTEXT_FLOOR_HOME"):
    from context_store.index.embed.query_encoder import build_query_encoder
    from context_store.store.context_store import ContextStore
    from service.state import Serving

    _home = Path(os.environ["FRESHCONTEXT_FLOOR_HOME"])
    _store = ContextStore.open(_home)
    _config = _store.settings.retrieval
    _ENCODER = build_query_encoder(_store.settings.embedding, _config.query_encoder, _home, cache_size=0)
    _ENCODER.encode(["warm up"])
    if _STAGE != "encode":
        _SERVING = Serving(_store, config=_config, triggers=[], encoder=lambda: _ENCODER, calibrator=None, reranker=None)
        _SERVING.warm_up()  # the dense snapshot, loaded before the first request as the server does
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
    if _STAGE == "encode" and _ENCODER is not None:
        _ENCODER.encode([body.query])
    elif _STAGE == "dense":
        _SERVING.dense.search(_ENCODER.encode([body.query])[0], _SERVING.retriever.candidate_count(body.k))
    elif _STAGE == "retrieve":
        _SERVING.retriever.retrieve(body.query, k=body.k)
    return {"results": [_RESULT] * body.k, "confidence": 0.5, "decision": "answer", "reasons": [], "trace_id": "tr-0", "timings_ms": {}}
