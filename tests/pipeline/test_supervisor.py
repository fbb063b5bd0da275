"""One Ctrl-C stops everything ``freshcontext run`` started: the supervisor on cheap children that misbehave."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli.run_cmds import stack
from pipeline.supervisor import descendants
from tests.conftest import REPO

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc"), reason="descendants are found in /proc (Linux)")

GRACE_S = 2.0

# Each child writes its pid (and its helpers' pids) to a file, then waits; the kinds of child
# that outlived `kill 0` and signals to one process group in `make run`.
POLITE = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"
STUBBORN = (
    "import os, signal, sys, time; signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"
)
# a grandchild in a session of its own that ignores INT and TERM: no signal to the child's group reaches it
ESCAPER = (
    "import os, subprocess, sys, time; "
    "g = subprocess.Popen([sys.executable, '-c', " + repr(STUBBORN) + ", sys.argv[1] + '.grandchild'], start_new_session=True); "
    "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)"
)
# a daemon: double fork, the middle process exits, the grandchild is orphaned (re-parented to the subreaper)
DAEMON = (
    "import os, signal, sys, time\n"
    "if os.fork() == 0:\n"
    "    os.setsid()\n"
    "    if os.fork() == 0:\n"
    "        signal.signal(signal.SIGINT, signal.SIG_IGN); signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "        open(sys.argv[1] + '.orphan', 'w').write(str(os.getpid())); time.sleep(600)\n"
    "    os._exit(0)\n"
    "open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(600)\n"
)


def _driver(tmp_path: Path, children: dict[str, str]) -> Path:
    specs = ", ".join(
        f"Child({name!r}, [sys.executable, '-c', {code!r}, {str(tmp_path / name)!r}])" for name, code in children.items()
    )
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\nfrom pipeline.supervisor import Child, Supervisor\n"
        f"sys.exit(Supervisor([{specs}], grace_s={GRACE_S}).run())\n"
    )
    return driver


def _pids(tmp_path: Path, names: list[str], timeout: float = 30.0) -> dict[str, int]:
    """The pids the children wrote, once all of them have (they start in parallel)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {n: (tmp_path / n) for n in names if (tmp_path / n).exists() and (tmp_path / n).read_text()}
        if len(found) == len(names):
            return {n: int(p.read_text()) for n, p in found.items()}
        assert time.monotonic() < deadline, f"children did not start: {sorted(set(names) - set(found))}"
        time.sleep(0.05)


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"  # dead, waiting for whoever inherited it
    except OSError:
        return True


def _start(tmp_path: Path, children: dict[str, str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, str(_driver(tmp_path, children))], cwd=REPO, env=env, stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_one_signal_stops_every_descendant_within_the_grace(tmp_path: Path, sig: signal.Signals) -> None:
    kids = {"polite": POLITE, "stubborn": STUBBORN, "escaper": ESCAPER, "daemon": DAEMON}
    supervisor = _start(tmp_path, kids)
    try:
        pids = _pids(tmp_path, [*kids, "escaper.grandchild", "daemon.orphan"])
        tree = descendants(supervisor.pid)
        assert set(pids.values()) <= set(tree), "every process, the orphan included, is under the supervisor"
        sent = time.monotonic()
        supervisor.send_signal(sig)
        _, err = supervisor.communicate(timeout=GRACE_S + 15)
        took = time.monotonic() - sent
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert supervisor.returncode == 0, err
    assert took < GRACE_S + 10, f"stopping took {took:.1f} s"
    left = {name: pid for name, pid in pids.items() if not _gone(pid)}
    left.update({f"tree {pid}": pid for pid in tree if not _gone(pid)})
    assert not left, f"still running after {took:.1f} s: {left}\n{err}"
    for name in kids:
        assert f"started {name} (pid {pids[name]}" in err
    assert f"{sig.name}: stopping polite, stubborn, escaper, daemon" in err
    assert "killed" in err and "polite (exit" in err and "stubborn (killed)" in err


def test_a_child_that_dies_stops_the_others(tmp_path: Path) -> None:
    kids = {"polite": POLITE, "stubborn": STUBBORN, "crasher": "import sys, time; open(sys.argv[1], 'w').write('1'); time.sleep(0.5); sys.exit(3)"}
    supervisor = _start(tmp_path, kids)
    try:
        pids = _pids(tmp_path, ["polite", "stubborn"])
        _, err = supervisor.communicate(timeout=GRACE_S + 20)
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
    assert supervisor.returncode == 1 and "crasher exited by itself (status 3); stopping the rest" in err
    assert all(_gone(pid) for pid in pids.values()), err


def test_run_starts_the_api_the_dagster_ui_and_the_warm_path(tmp_path: Path) -> None:
    children = {c.name: list(c.argv) for c in stack(tmp_path, host="127.0.0.1", port=8123, dagster_port=3123)}
    assert children["api"][-5:] == ["serve", "--host", "127.0.0.1", "--port", "8123"]
    assert children["dagster"][1:3] == ["dev", "-w"] and children["dagster"][-4:] == ["-h", "127.0.0.1", "-p", "3123"]
    assert children["watcher"][-2:] == ["watch", "--apply"] and ["--home", str(tmp_path)] == children["watcher"][3:5]
    assert "watcher" not in {c.name for c in stack(tmp_path, host="h", port=1, dagster_port=2, watch=False)}


@pytest.mark.parametrize("restored", [True, False])
def test_children_stop_on_sigterm_even_when_started_as_a_background_job(restored: bool) -> None:
    """A background job starts with SIGINT ignored; Dagster maps SIGTERM to SIGINT's handler when it
    runs a job, so SIGTERM became ignored too, and ignored signals survive exec: without
    stoppable_children a child's terminate() did nothing (Dagster's log tails, 30 s waits each)."""
    script = (
        "import subprocess\n"
        "from dagster._utils.interrupts import setup_interrupt_handlers\n"
        "from pipeline.supervisor import stoppable_children\n"
        + ("stoppable_children()\n" if restored else "")
        + "setup_interrupt_handlers()  # what execute_in_process does\n"
        "child = subprocess.Popen(['sleep', '30'])\n"
        "child.terminate()\n"
        "try:\n"
        "    print(child.wait(timeout=5))\n"
        "except subprocess.TimeoutExpired:\n"
        "    child.kill(); print('still running')\n"
    )
    background = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731  (as a shell starts `cmd &`)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, preexec_fn=background, timeout=60, cwd=REPO)
    assert out.stdout.strip() == ("-15" if restored else "still running"), out.stderr
