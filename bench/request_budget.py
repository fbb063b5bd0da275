"""Where one request's CPU goes: ``/v1/retrieve``'s path in one thread, stage by stage.

``bench/latency.py`` measures the served path against its floors under load; this says which
parts of the path the difference is made of. It serves ``--requests`` held-out questions
through ``respond()`` (recording, as the API does: routing, the asked-question log and the
trace commit) with the parts a server worker builds (``service.state.Serving``, one compute
thread), times each stage's CPU on the calling thread (the coalescers run a lone caller's work
on its own thread), and prints milliseconds per request with each stage's share. The model's
part is shown twice: as the path pays it, and alone, back to back in the same run (the path's
passes over the snapshot evict what the model keeps in the CPU's caches).

It serves a copy of the home ``bench/latency.py`` builds (``--chunks``, ``--real``, ``--cache``;
built here when missing), so it starts from the state a latency run starts from.

    python bench/request_budget.py [--chunks 100000] [--real 20000] [--requests 600] [--json]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pydantic_core import to_json  # noqa: E402

from bench.latency import DATA, prepared_home, real_texts, run_copy  # noqa: E402

# (label, depth, what is timed; None: timed by ``ask``): a stage's time includes the stages indented below it.
STAGES = [
    ("respond()", 0, None),
    ("retrieve", 1, "context_store.retrieve.retriever:Retriever.retrieve"),
    ("encode the question", 2, "encoder"),
    ("dense search", 2, "context_store.retrieve.retriever:Retriever._dense_hits"),
    ("full-text (BM25) search", 2, "context_store.retrieve.retriever:Retriever._text_hits"),
    ("SQL: are the versions current", 2, "context_store.retrieve.retriever:Retriever._current_hashes"),
    ("routing signals", 1, "context_store.route.respond:routing_signals"),
    ("recording: one transaction", 1, "context_store.route.recording:GroupCommit._transaction"),
    ("response body (dict, JSON)", 0, None),
]


class Budget:
    """CPU seconds of the calling thread per stage label."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    def timed(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[label] += time.thread_time() - started

        return wrapper


def _owner(target: str) -> tuple[Any, str]:
    """``module:attr`` or ``module:Class.attr`` -> (the object holding it, the attribute's name)."""
    module_name, _, path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, name


@contextmanager
def instrumented(budget: Budget, encoder: Any) -> Iterator[None]:
    with ExitStack() as stack:
        for label, _, target in STAGES:
            if target is None:
                continue
            owner, name = (encoder, "encode") if target == "encoder" else _owner(target)
            stack.enter_context(mock.patch.object(owner, name, budget.timed(label, getattr(owner, name))))
        yield


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000, help="rows of the home's company_chunks (as bench/latency.py)")
    parser.add_argument("--real", type=int, default=20_000, help="how many of them are real embedded texts")
    parser.add_argument("--requests", type=int, default=600, help="questions timed (after 50 unmeasured)")
    parser.add_argument("--data", type=Path, default=DATA, help="the shared open data (stackfaq, clinc150, plausible_docs_history)")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "freshcontext-bench-latency",
                        help="where bench/latency.py keeps its built homes")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    from service.compute import one_compute_thread

    one_compute_thread()
    if not (args.data / "stackfaq").is_dir():
        raise SystemExit(f"{args.data} not found: the benchmark needs ../shared/data (or --data)")
    built, _ = prepared_home(args.cache, args.chunks, args.real, args.data, "cpu")
    with run_copy(built) as home:
        out = measure(home, args.data, args.requests)
    if args.json:
        print(json.dumps(out))
        return
    per, total = out["ms_per_request"], out["total_ms"]
    print(f"{args.requests} requests through respond() in one thread ({args.chunks} chunks); CPU per request:")
    for label, depth, _ in STAGES:
        print(f"  {'  ' * depth}{label:<{40 - 2 * depth}} {per[label]:6.2f} ms  {100 * per[label] / total:5.1f} %")
    print(f"  {'all of it':<40} {total:6.2f} ms  (the process: {out['process_cpu_ms']:.2f} ms, other threads included)")
    print(f"encoding a question alone, back to back: {out['encode_alone_ms']:.2f} ms; in the path: {per['encode the question']:.2f} ms "
          f"({per['encode the question'] / out['encode_alone_ms']:.2f}x)")


def measure(home: Path, data: Path, requests: int) -> dict[str, Any]:
    from context_store.index.embed.query_encoder import build_query_encoder
    from context_store.route import Question, respond
    from context_store.store.context_store import ContextStore
    from service.state import Serving

    store = ContextStore.open(home)
    config = store.settings.retrieval
    encoder = build_query_encoder(store.settings.embedding, config.query_encoder, home)  # the server's, without its query cache
    serving = Serving(store, config=config, triggers=[], encoder=lambda: encoder, calibrator=None, reranker=None)
    serving.warm_up()
    _, questions = real_texts(0, data)
    held_out = questions[1000:]  # past those bench/latency.py measures in-process
    if len(held_out) < 50 + requests + requests // 3:
        raise SystemExit(f"--requests {requests} needs more held-out questions than the data has ({len(held_out)})")
    fresh = iter(held_out)
    budget = Budget()

    def ask() -> None:
        started = time.thread_time()
        response = respond(serving.responder, Question(query=next(fresh), k=10, client="bench"))
        answered = time.thread_time()
        to_json(response.as_dict())
        budget.seconds["respond()"] += answered - started
        budget.seconds["response body (dict, JSON)"] += time.thread_time() - answered

    for _ in range(50):
        ask()  # warm: the snapshot's pages, the SQL statements' compiled forms, the open questions' vectors
    budget.seconds.clear()
    with instrumented(budget, encoder):
        cpu, thread = time.process_time(), time.thread_time()
        for _ in range(requests):
            ask()
        cpu, thread = time.process_time() - cpu, time.thread_time() - thread
    alone = []
    for _ in range(requests // 3):
        started = time.thread_time()
        encoder.encode([next(fresh)])
        alone.append(time.thread_time() - started)
    per = {label: budget.seconds[label] * 1000 / requests for label, _, _ in STAGES}
    return {
        "requests": requests, "ms_per_request": per, "total_ms": per["respond()"] + per["response body (dict, JSON)"],
        "process_cpu_ms": cpu * 1000 / requests, "calling_thread_cpu_ms": thread * 1000 / requests,
        "encode_alone_ms": sum(alone) * 1000 / len(alone), "load_average_1m_after": os.getloadavg()[0],
    }


if __name__ == "__main__":
    main()
