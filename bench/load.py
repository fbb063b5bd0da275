"""Load and fault test on the scaled-out layout, loopback only, bounded in count and time.

One run, all on this machine:

1. a throwaway PostgreSQL cluster and a moto S3 server (tests/scaleout/servers.py); a home
   whose SQL store is on PostgreSQL and whose LanceDB tables are on ``s3://``;
2. a base ingest of ``--docs`` help articles (copies of the demo help centre), through the
   CLI (Dagster in-process, the real all-MiniLM-L6-v2 model);
3. ``--replicas`` API processes (``freshcontext serve``) on their own ports, and
   ``--clients`` concurrent clients posting the labelled demo questions to ``/v1/retrieve``
   round-robin over the replicas, while every one of the documents is changed and
   re-ingested and a staff-answer stream (bench/staff_stream.py) answers the questions the
   load routes to people through the signed webhook. The load runs for ``--seconds`` and
   in any case until the ingest under load has finished (at most ``--max-seconds``): a
   1,000-document ingest on two cores takes longer than a minute, and the point is to
   measure serving while it runs. Reported: requests served, errors (goal 0),
   p50/p95/p99, and CPU seconds per process (replicas, ingest, moto, PostgreSQL);
4. afterwards, once the replicas' warm path has indexed the last answers:
   ``index_matches_store`` (every current chunk in LanceDB, nothing else), and the
   staff-answer audit: posted (2xx) = stored, none lost, forged signatures refused (401)
   and never stored;
5. fault: every document changed again, the ingest killed with SIGKILL half-way through its
   LanceDB commits, the drift that leaves, then the next ingest's repair.

Usage: python bench/load.py [--docs 1000] [--clients 16] [--seconds 60] [--max-seconds 600] [--replicas 2] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import httpx  # noqa: E402
import yaml  # noqa: E402
from sqlmodel import Session, col, func, or_, select  # noqa: E402

from bench.staff_stream import audit, run_stream  # noqa: E402
from context_store.index.drift import index_drift  # noqa: E402
from context_store.route.webhooks import generate_secret  # noqa: E402
from context_store.store.context_store import ContextStore  # noqa: E402
from context_store.store.database import make_engine  # noqa: E402
from context_store.store.models import Document  # noqa: E402
from tests.scaleout.servers import free_port, start_postgres, start_s3  # noqa: E402

KEY = "load-test-key"
SECRET = generate_secret()  # the staff webhook's; written into the home's routing config
MAX_REQUESTS = 200_000  # a hard bound besides the clock
USERS = sorted(p.stem for p in (REPO / "demo" / "users").glob("u-*.json"))


def _cli(home: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pipeline.cli", "--home", str(home), *args]


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "FRESHCONTEXT_HOME": str(home), "FRESHCONTEXT_API_KEYS": KEY, "PYTHONPATH": str(REPO)}
    env.pop("DAGSTER_HOME", None)  # an ephemeral Dagster instance per ingest
    return env


def _make_corpus(root: Path, docs: int) -> list[Path]:
    demo = sorted((REPO / "demo" / "company").rglob("*.*"))
    files: list[Path] = []
    for copy in itertools.count():
        for src in demo:
            if len(files) == docs:
                return files
            dst = root / f"copy{copy:03d}" / src.relative_to(REPO / "demo" / "company")
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
            files.append(dst)
    return files


def _change_all(files: list[Path], round_no: int) -> None:
    """One new paragraph per document: a real edit that re-embeds one chunk of each."""
    for n, path in enumerate(files):
        text = path.read_text(encoding="utf-8")
        note = f"Update {round_no}: reference {n:05d}-{round_no} applies from this week."
        if path.suffix == ".html":
            path.write_text(text.replace("</body>", f"<p>{note}</p></body>"), encoding="utf-8")
        else:
            path.write_text(f"{text}\n\n{note}\n", encoding="utf-8")


def _ingest(home: Path) -> subprocess.Popen[str]:
    # the configured sources, staff answers included, as a deployment's scheduled ingest sees them
    return subprocess.Popen(
        _cli(home, "ingest", "--no-progress", "--json"),
        cwd=REPO, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _reap(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str, float]:
    """``communicate`` plus the CPU seconds of the process, from the kernel's accounting of reaped children.

    Only this process is reaped meanwhile (replicas and servers live until the end), so
    the difference in RUSAGE_CHILDREN is its own user + system time.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    stdout, stderr = proc.communicate(timeout=timeout)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return stdout, stderr, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a live process, its reaped children and its live descendants (PostgreSQL's backends)."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        # after the command name: state ppid ... utime(12) stime(13) cutime(14) cstime(15)
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = sum(int(x) for x in fields[11:15]) / _TICK
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo.extend(child for child, parent in parents.items() if parent == current)
    return total


def _pending(engine: Any) -> int:
    with Session(engine) as s:
        current, indexed = col(Document.current_version_id), col(Document.indexed_version_id)
        return int(
            s.exec(
                select(func.count()).select_from(Document).where(
                    or_(current != indexed, current.is_(None) & indexed.is_not(None), current.is_not(None) & indexed.is_(None))
                )
            ).one()
        )


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]


async def _load(bases: list[str], questions: list[dict[str, Any]], clients: int, stop: asyncio.Event) -> dict[str, Any]:
    latencies: dict[str, list[float]] = {b: [] for b in bases}
    errors: dict[str, int] = {}
    budget = itertools.count()
    started = time.monotonic()
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(n: int, http: httpx.AsyncClient) -> None:
        rng = random.Random(n)
        base = bases[n % len(bases)]
        while not stop.is_set() and next(budget) < MAX_REQUESTS:
            q = rng.choice(questions)
            body: dict[str, Any] = {"query": q["text"], "k": 5}
            if rng.random() < 0.5:  # half the agents ask for a known user, as a support chat would
                body["user_id"] = rng.choice(USERS)
            started = time.perf_counter()
            try:
                r = await http.post(f"{base}/v1/retrieve", json=body, headers={"X-API-Key": KEY})
                if r.status_code == 200 and r.json().get("results") is not None:
                    latencies[base].append(time.perf_counter() - started)
                else:
                    errors[f"http {r.status_code}"] = errors.get(f"http {r.status_code}", 0) + 1
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1

    async with httpx.AsyncClient(timeout=30, limits=limits) as http:
        await asyncio.gather(*(client(n, http) for n in range(clients)))
    seconds = time.monotonic() - started
    every = [x for v in latencies.values() for x in v]
    return {
        "seconds": round(seconds, 1),
        "requests_ok": len(every),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "rps": round(len(every) / seconds, 1),
        "p50_ms": round(1000 * (_percentile(every, 50) or 0), 1),
        "p95_ms": round(1000 * (_percentile(every, 95) or 0), 1),
        "p99_ms": round(1000 * (_percentile(every, 99) or 0), 1),
        "per_replica": {b: {"ok": len(v), "p95_ms": round(1000 * (_percentile(v, 95) or 0), 1)} for b, v in latencies.items()},
    }


def _wait_ready(bases: list[str], procs: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=5) as http:
        for base, proc, log in zip(bases, procs, logs):
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"replica {base} exited:\n{log.read_text(errors='replace')[-3000:]}")
                try:
                    if http.get(f"{base}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"replica {base} not ready after {timeout:.0f}s")
                time.sleep(0.5)


def _drift(home: Path) -> dict[str, Any]:
    store = ContextStore.open(home)
    reports = index_drift(store)
    return {
        "index_matches_store": all(r.ok for r in reports),
        **{r.table: {"expected": r.expected, "actual": r.actual, "missing": len(r.missing), "extra": len(r.extra),
                     "pending_documents": len(r.pending), "unexplained": len(r.unexplained)} for r in reports},
    }


def _settle(engine: Any, timeout: float = 180) -> tuple[int, float]:
    """Wait for the replicas' warm path to index the last answers; returns (still pending, seconds waited)."""
    started = time.monotonic()
    while (pending := _pending(engine)) and time.monotonic() - started < timeout:
        time.sleep(1.0)
    return pending, round(time.monotonic() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=60.0, help="the least the load runs; it also runs until the ingest under load ends")
    parser.add_argument("--max-seconds", type=float, default=600.0, help="the most the load runs, ingest finished or not")
    parser.add_argument("--answer-rate", type=float, default=1.0, help="staff answers per second, at most")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--ingest-after", type=float, default=3.0, help="seconds into the load when the ingest starts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    say = (lambda *a: print(*a, file=sys.stderr, flush=True)) if args.json else (lambda *a: print(*a, flush=True))

    out: dict[str, Any] = {"docs": args.docs, "clients": args.clients, "seconds": args.seconds, "max_seconds": args.max_seconds, "replicas": args.replicas,
                           "loadavg_start": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="freshcontext-load-"))
    pg, s3 = start_postgres(), start_s3()
    replicas: list[subprocess.Popen[bytes]] = []
    try:
        s3.create_bucket("freshcontext-load")
        home, company, users, staff = work / "home", work / "company", work / "users", work / "staff_answers"
        home.mkdir()
        staff.mkdir()
        files = _make_corpus(company, args.docs)
        shutil.copytree(REPO / "demo" / "users", users)
        (home / "freshcontext.yaml").write_text(yaml.safe_dump({
            "database_url": pg.create_database("freshcontext"),
            "lancedb_uri": "s3://freshcontext-load/lancedb",
            "object_storage": s3.object_storage(),
            "company_sources": [{"name": "company", "path": str(company)}, {"name": "staff", "path": str(staff), "kind": "staff_answer"}],
            "user_sources": [{"name": "users", "path": str(users)}],
            # routing_config reads it from here (or FRESHCONTEXT_STAFF_WEBHOOK_SECRETS)
            "routing": {"webhook_secrets": [SECRET]},
        }))
        say(f"base ingest of {len(files)} documents on PostgreSQL + S3 ...")
        t0 = time.perf_counter()
        base = _ingest(home)
        _, err, base_cpu = _reap(base, 1800)
        if base.returncode != 0:
            raise RuntimeError(f"base ingest failed:\n{err[-3000:]}")
        out["base_ingest_s"] = round(time.perf_counter() - t0, 1)
        out["base_ingest_cpu_s"] = round(base_cpu, 1)

        ports = [free_port() for _ in range(args.replicas)]
        bases = [f"http://127.0.0.1:{p}" for p in ports]
        logs = [work / f"replica-{p}.log" for p in ports]
        for port, log in zip(ports, logs):
            with open(log, "wb") as fh:
                replicas.append(subprocess.Popen(_cli(home, "serve", "--host", "127.0.0.1", "--port", str(port)),
                                                 cwd=REPO, env=_env(home), stdout=fh, stderr=subprocess.STDOUT, start_new_session=True))
        _wait_ready(bases, replicas, logs)
        questions = [json.loads(line) for line in (REPO / "demo" / "golden" / "questions.jsonl").read_text().splitlines() if line.strip()]

        _change_all(files, 1)
        say(f"{args.clients} clients on {args.replicas} replicas for {args.seconds:.0f}s or until the ingest of "
            f"{len(files)} changed documents (after {args.ingest_after:.0f}s) ends, at most {args.max_seconds:.0f}s; staff answers at {args.answer_rate}/s ...")
        servers = {"moto": s3.proc.pid, "postgres": pg.proc.pid, **{f"replica_{n}": p.pid for n, p in enumerate(replicas)}}
        cpu_before = {name: _cpu_seconds(pid) for name, pid in servers.items()}
        bench_cpu = time.process_time()

        async def run_load() -> tuple[dict[str, Any], dict[str, Any], Any]:
            stop = asyncio.Event()
            started_load = time.monotonic()
            load = asyncio.create_task(_load(bases, questions, args.clients, stop))
            stream = asyncio.create_task(run_stream(bases, KEY, SECRET, stop=stop, rate=args.answer_rate))
            await asyncio.sleep(args.ingest_after)
            started = time.perf_counter()
            proc = _ingest(home)
            reaped = asyncio.create_task(asyncio.to_thread(_reap, proc, 1800))
            peak_load = 0.0
            while True:
                peak_load = max(peak_load, os.getloadavg()[0])
                elapsed = time.monotonic() - started_load
                if (reaped.done() and elapsed >= args.seconds) or elapsed >= args.max_seconds or load.done():
                    break
                await asyncio.sleep(0.5)
            within = reaped.done()
            ingest_s = time.perf_counter() - started
            stop.set()
            result, log = await load, await stream
            stdout, stderr, cpu = await reaped
            if proc.returncode != 0:
                raise RuntimeError(f"ingest under load failed:\n{stderr[-3000:]}")
            summary = json.loads(stdout)
            return {**result, "loadavg_1m_peak": round(peak_load, 1)}, {
                "seconds": round(ingest_s if within else time.perf_counter() - started, 1), "finished_within_load_window": within,
                "cpu_s": round(cpu, 1),
                "documents_changed": summary["assets"]["company_documents"]["changed"],
                "chunks_embedded": summary["assets"]["company_chunk_index"]["chunks_embedded"],
                "checks": summary["checks"],
            }, log

        load, ingest_under_load, stream_log = asyncio.run(run_load())
        cpu_load = {name: round(_cpu_seconds(pid) - cpu_before[name], 1) for name, pid in servers.items()}
        out["load"] = load
        out["ingest_under_load"] = ingest_under_load
        out["cpu_s_during_load"] = {**cpu_load, "ingest": ingest_under_load["cpu_s"], "bench_clients": round(time.process_time() - bench_cpu, 1)}
        engine = make_engine(ContextStore.open(home).settings.sql_url)
        still_pending, waited = _settle(engine)
        out["after_load"] = {"settle_s": waited, "pending": still_pending, **_drift(home)}
        out["staff_answers"] = audit(ContextStore.open(home), stream_log)
        say(f"load: {load['requests_ok']} ok, {load['errors']} errors, p95 {load['p95_ms']} ms; drift ok: {out['after_load']['index_matches_store']}; "
            f"answers posted {out['staff_answers']['posted']}, stored {out['staff_answers']['stored']}, lost {out['staff_answers']['lost']}")

        # -- fault: kill -9 half-way through the commits, then repair ---------------------
        for proc in replicas:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc in replicas:
            proc.wait(timeout=30)
        replicas.clear()
        _change_all(files, 2)
        victim = _ingest(home)
        killed: dict[str, Any] = {}
        deadline = time.monotonic() + 1800
        seen_pending = 0
        while victim.poll() is None and time.monotonic() < deadline:
            pending = _pending(engine)
            seen_pending = max(seen_pending, pending)
            # versioning done (all pending) and some, not all, LanceDB commits recorded
            if seen_pending >= len(files) * 0.9 and 0 < pending <= seen_pending * 0.7:
                victim.send_signal(signal.SIGKILL)
                killed = {"pending_at_kill": pending, "indexed_before_kill": seen_pending - pending}
                break
            time.sleep(0.1)
        victim.communicate(timeout=60)
        out["fault"] = {"killed": bool(killed), **killed, "after_kill": _drift(home)}
        say(f"kill -9: {killed or 'the ingest finished before it could be killed'}")
        t0 = time.perf_counter()
        repair = _ingest(home)
        stdout, stderr, repair_cpu = _reap(repair, 1800)
        if repair.returncode != 0:
            raise RuntimeError(f"repair ingest failed:\n{stderr[-3000:]}")
        summary = json.loads(stdout)
        out["fault"].update({
            "repair_s": round(time.perf_counter() - t0, 1),
            "repair_cpu_s": round(repair_cpu, 1),
            "repair_documents_indexed": summary["assets"]["company_chunk_index"]["documents_indexed"],
            "repair_chunks_reused": summary["assets"]["company_chunk_index"]["chunks_reused"],
            "repair_checks": summary["checks"],
            "after_repair": _drift(home),
            "pending_after_repair": _pending(engine),
        })
        engine.dispose()
        out["loadavg_end"] = os.getloadavg()
    finally:
        for proc in replicas:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        s3.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(out, default=str))
        return
    print(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
