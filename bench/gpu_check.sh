#!/usr/bin/env bash
# The GPU checks of issue 18 on a lent H200 (the device tool), prepared and tested here on the CPU.
# What one call may carry (64 MiB) cannot hold both the model and LanceDB: bench/gpu_pack.py says
# why, and what goes in which call.
#
#   bench/gpu_check.sh pack            here: make .gpu1/ (~52.0 MiB) and .gpu2/ (~50.7 MiB)
#   bench/gpu_check.sh stage           device call 1, carry .gpu1: unpack the model and the data into
#                                      .gpucache/; the model's own checks on the GPU (parity with the
#                                      CPU, speeds, fp16: bench/gpu_micro.py); micro.json (~1 min)
#   bench/gpu_check.sh run [options]   device call 2, carry .gpu2, made AT ONCE after call 1 (an idle
#                                      machine goes back after 30 s, .gpucache/ with it): LanceDB and
#                                      the other packages, the CUDA tests (ONNX parity included), the
#                                      latency benchmark (8 and 32 clients, with its encode floor), the
#                                      warm-path replay of the last 30 Plausible commits, the whole
#                                      Plausible ingest (~4.5 min, 5.75 at most)
#   bench/gpu_check.sh all [options]   here: stage and run in one go, e.g. --device cpu --small, after
#                                      'pack --python 3.11' (the packages built for this machine's Python)
#
# options: --device cuda|cpu (cuda)  --small (CPU-sized runs)  --chunks N  --real N  --clients 8,32
#   --seconds S  --workers N  --commits N  --ingest-limit N  --budget S (run's deadline: 330)
#   --python X.Y (pack: the Python the packages are for; 3.12, the device's)
# Results: JSON under $OUT (call 1: micro; call 2: imports, latency, freshness, ingest, micro again, summary)
# and log.txt. Env: PYTHON (python3), OUT (bench/out/gpu), FC_GPU_CACHE (.gpucache), FC_GPU_FIRST (.gpu1),
# FC_GPU_SECOND (.gpu2).
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${PYTHON:-python3}
OUT=${OUT:-$REPO/bench/out/gpu}
CACHE=${FC_GPU_CACHE:-$REPO/.gpucache}
FIRST=${FC_GPU_FIRST:-$REPO/.gpu1}
SECOND=${FC_GPU_SECOND:-$REPO/.gpu2}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
STEPS="$CACHE/steps.jsonl"

say() { echo "[gpu_check $(date +%T)] $*" | tee -a "$LOG"; }

# The device's own packages, then the carried ones; the repo is not installed, only on the path.
use_cache() {
    export PYTHONPATH="$REPO:$CACHE/site" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
    export FRESHCONTEXT_MODELS_DIR="$CACHE/models"
}

# step NAME CAP_S JSON_OUT COMMAND...: run with a timeout inside the deadline; record rc and seconds.
step() {
    local name=$1 cap=$(($2 * CAP_SCALE)) json=$3; shift 3
    local left=$((DEADLINE - SECONDS))
    [ "$cap" -gt "$left" ] && cap=$left
    if [ "$cap" -lt 20 ]; then
        say "skip $name: ${left} s left before the deadline"
        echo "{\"step\": \"$name\", \"rc\": null, \"skipped\": true}" >> "$STEPS"; return
    fi
    say "$name (at most $cap s): $*"
    local started=$SECONDS rc
    if [ "$json" = "-" ]; then
        timeout -k 10 "$cap" "$@" >> "$LOG" 2>&1; rc=$?
    else
        timeout -k 10 "$cap" "$@" > "$OUT/$json" 2>> "$LOG"; rc=$?
    fi
    say "$name: rc $rc in $((SECONDS - started)) s"
    echo "{\"step\": \"$name\", \"rc\": $rc, \"seconds\": $((SECONDS - started))}" >> "$STEPS"
}

stage() {
    use_cache
    DEADLINE=$((SECONDS + 240 * CAP_SCALE))
    for f in model.planes.xz model.json model.tar.xz data.tar.xz; do
        [ -f "$FIRST/$f" ] || { say "missing $FIRST/$f: run 'bench/gpu_check.sh pack' here, and carry .gpu1"; exit 2; }
    done
    rm -rf "$CACHE" && mkdir -p "$CACHE/site" "$CACHE/data"
    "$PY" "$REPO/bench/gpu_pack.py" unpack first "$FIRST" "$CACHE" || { say "unpacking .gpu1 failed"; exit 2; }
    say "unpacked in $SECONDS s; device $DEVICE"
    nvidia-smi --query-gpu=name,driver_version,memory.used,memory.total,utilization.gpu --format=csv >> "$LOG" 2>&1
    touch "$CACHE/staged"  # before the model's checks: call 2 needs the files, not their outcome
    step micro 150 micro.json "$PY" "$REPO/bench/gpu_micro.py" --device "$DEVICE" --data "$CACHE/data" $MICRO_SMALL
    cp "$OUT/micro.json" "$CACHE/micro.json" 2>/dev/null
    "$PY" -c "import json,sys; print(json.dumps(json.load(open(sys.argv[1])), indent=1))" "$OUT/micro.json" 2>/dev/null | tail -40
    say "STAGE DONE in $SECONDS s. Make call 2 NOW (within 30 s): 'bash bench/gpu_check.sh run', carry .gpu2"
}

# LanceDB and the rest in; everything imports with the device's numpy/pyarrow/torch, without Dagster; a store works.
imports_check() {
    "$PY" "$REPO/bench/gpu_pack.py" unpack second "$SECOND" "$CACHE" || { say "unpacking .gpu2 failed"; exit 2; }
    "$PY" - "$OUT/imports.json" <<'EOF' 2>&1 | tee -a "$LOG"
import json, os, platform, sys, tempfile, time
from importlib import metadata
from pathlib import Path
started = time.perf_counter()
import fastapi, lancedb, pyarrow, sqlmodel, torch, uvicorn  # noqa: F401,E401
import pipeline.cli, pipeline.watcher, service.app  # noqa: F401,E401
from context_store.index.embed.device import cuda_plausible, resolve_device
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.retrieve.retriever import retrieve
from context_store.store.context_store import ContextStore
assert "dagster" not in sys.modules, "the serving and warm paths must not import Dagster"
with tempfile.TemporaryDirectory() as tmp:
    (Path(tmp) / "kb").mkdir()
    (Path(tmp) / "kb" / "refunds.md").write_text("# Refunds\n\nAsk for a refund within 30 days of delivery.\n")
    store = ContextStore.open(Path(tmp) / "home", company_sources=[{"name": "kb", "path": str(Path(tmp) / "kb")}])
    embedder = HashingEmbedder(dim=64)
    ingest(store, embedder)
    found = retrieve(store, embedder, "refund within 30 days", k=1)
    assert found.results and found.results[0].doc_id == "kb/refunds.md", found
names = ["lancedb", "pyarrow", "numpy", "torch", "sentence-transformers", "transformers", "onnxruntime", "onnx", "sqlmodel", "pydantic", "fastapi"]
out = {"ok": True, "python": platform.python_version(), "torch_cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
       "cuda_plausible": cuda_plausible(), "auto_device": resolve_device("auto"), "cpus": os.cpu_count(),
       "versions": {n: metadata.version(n) for n in names}, "check_s": round(time.perf_counter() - started, 2)}
Path(sys.argv[1]).write_text(json.dumps(out, indent=1))
print(json.dumps(out))
EOF
}

run() {
    use_cache
    DEADLINE=$((SECONDS + BUDGET))
    [ -f "$CACHE/staged" ] || {
        say "nothing staged in $CACHE: this is not the machine call 1 staged (an idle machine goes back after 30 s)."
        say "Make call 1 ('bash bench/gpu_check.sh stage', carry .gpu1), then call 2 at once."; exit 3; }
    for f in lancedb.tar.xz site.tar.xz; do
        [ -f "$SECOND/$f" ] || { say "missing $SECOND/$f: run 'bench/gpu_check.sh pack' here, and carry .gpu2"; exit 2; }
    done
    rm -f "$STEPS"
    cp "$CACHE/micro.json" "$OUT/micro.json" 2>/dev/null
    imports_check || { say "the packages do not import together here: see above"; exit 4; }
    say "LanceDB in, imports checked at $SECONDS s; device $DEVICE; deadline in $((DEADLINE - SECONDS)) s"
    # Most telling first: a step that would run past the deadline is cut, and the ones after it skipped.
    step device_tests 60 - "$PY" -m pytest -q -p no:cacheprovider "$REPO/tests/context_store/index/test_device.py"
    step latency 170 latency.json "$PY" "$REPO/bench/latency.py" --device "$DEVICE" --chunks "$CHUNKS" --real "$REAL" \
        --clients "$CLIENTS" --seconds "$RUN_SECONDS" --warmup 3 --workers "$WORKERS" --no-http-floor \
        --data "$CACHE/data" --cache "$CACHE/latency" --json
    step freshness 75 freshness.json "$PY" "$REPO/bench/freshness.py" --no-dagster --commits "$COMMITS" --device "$DEVICE" \
        --history "$CACHE/data/plausible_docs_history" --json
    step ingest 60 ingest.json "$PY" "$REPO/bench/ingest.py" --device "$DEVICE" --history "$CACHE/data/plausible_docs_history" \
        ${INGEST_LIMIT:+--limit "$INGEST_LIMIT"} --json
    nvidia-smi --query-gpu=name,memory.used,memory.total,utilization.gpu --format=csv >> "$LOG" 2>&1
    say "RUN DONE in $SECONDS s"
    "$PY" "$REPO/bench/gpu_micro.py" --summarize "$OUT" --steps "$STEPS" | tee -a "$LOG"
}

command=${1:-}; shift || true
PACK_PYTHON=3.12 DEVICE=cuda CHUNKS=100000 REAL=20000 CLIENTS=8,32 RUN_SECONDS=10 WORKERS=14 COMMITS=30 INGEST_LIMIT= BUDGET=330 CAP_SCALE=1 MICRO_SMALL=
while [ $# -gt 0 ]; do
    case $1 in
        --device) DEVICE=$2; [[ $DEVICE =~ ^(cpu|cuda)$ ]] || { echo "--device is cpu or cuda" >&2; exit 2; }; shift ;;
        --small) CHUNKS=5000 REAL=1000 CLIENTS=2,4 RUN_SECONDS=4 WORKERS=2 COMMITS=5 INGEST_LIMIT=150 BUDGET=1200 CAP_SCALE=3 MICRO_SMALL=--small ;;
        --chunks) CHUNKS=$2; shift ;;
        --real) REAL=$2; shift ;;
        --clients) CLIENTS=$2; shift ;;
        --seconds) RUN_SECONDS=$2; shift ;;
        --workers) WORKERS=$2; shift ;;
        --commits) COMMITS=$2; shift ;;
        --ingest-limit) INGEST_LIMIT=$2; shift ;;
        --budget) BUDGET=$2; shift ;;
        --python) PACK_PYTHON=$2; shift ;;
        *) echo "unknown option $1 (see the head of $0)" >&2; exit 2 ;;
    esac
    shift
done
case $command in
    pack) "${PYTHON:-$REPO/.venv/bin/python}" "$REPO/bench/gpu_pack.py" pack --python "$PACK_PYTHON" ;;
    stage) stage ;;
    run) run ;;
    all) stage && run ;;
    *) sed -n '2,24p' "$0"; exit 2 ;;
esac
