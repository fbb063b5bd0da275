"""One Ctrl-C stops everything it started: child processes, their process groups, and whatever they spawned.

``make run`` starts three long-lived processes (the API, ``dagster dev``, the watcher's warm
path). A shell's ``kill 0`` is not enough: ``dagster dev`` waits up to 60 s per child for a
clean shutdown, and its webserver and daemon start code servers and run workers of their
own; in one trial they were still running 20 s after TERM and INT to its process group. So
the supervisor:

* starts each child in a session of its own (its own process group), so a terminal's
  Ctrl-C reaches the supervisor alone and each child is told once, by the supervisor;
* on Linux becomes a child subreaper (``prctl``): a descendant whose parent died is
  re-parented to the supervisor instead of init, so it can still be found and stopped;
* on SIGINT or SIGTERM forwards that signal to each child's process group (and to any
  descendant that left its group), waits up to ``grace_s`` for every descendant to exit,
  then SIGKILLs each one left; a second Ctrl-C skips the wait;
* stops the others the same way when one child exits by itself: half a stack running is
  more confusing than none.

Descendants are found in ``/proc`` (each process's parent); elsewhere only the children's
process groups are signalled.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

__all__ = ["Child", "Supervisor", "descendants", "stoppable_children"]

PR_SET_CHILD_SUBREAPER = 36


def stoppable_children() -> None:
    """Let the children this process starts be stopped by SIGTERM, whatever this process inherited.

    An ignored signal stays ignored across fork and exec, and a shell starts a background job
    (``cmd &`` with no job control) with SIGINT ignored. Dagster maps SIGTERM to SIGINT's
    handler whenever it runs a job (``setup_interrupt_handlers``), so such a process comes to
    ignore SIGTERM too and passes that on: ``terminate()`` no longer stops its children.
    Dagster stops the ``tail`` processes that mirror a run's logs that way and waits 30 s for
    each, so a backgrounded test run's replays hung. SIGINT gets Python's own handler back
    (KeyboardInterrupt) and SIGTERM its default. Main thread only, as every ``signal.signal``.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


@dataclass(frozen=True)
class Child:
    """A process to start: a name for messages, its argv, and where it runs."""

    name: str
    argv: Sequence[str]
    cwd: str | None = None
    env: dict[str, str] | None = None


@dataclass
class _Started:
    child: Child
    proc: subprocess.Popen[bytes]
    outcome: str = ""  # how it ended, for the closing summary


def _stat(pid: str) -> tuple[int, str] | None:
    """(parent pid, state) of one process from /proc, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()  # the command name may hold spaces and parentheses
    return int(fields[1]), fields[0]


def descendants(root: int | None = None) -> dict[int, str]:
    """Every live descendant of ``root`` (default: this process) as pid -> state; zombies left out."""
    root = os.getpid() if root is None else root
    if not os.path.isdir("/proc"):
        return {}
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            info = _stat(entry)
            if info is not None:
                children.setdefault(info[0], []).append((int(entry), info[1]))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid, state in children.get(todo.pop(), []):
            if pid not in found:
                found[pid] = state
                todo.append(pid)
    return {pid: state for pid, state in found.items() if state != "Z"}


def _become_subreaper() -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _signal(pid: int, sig: int, *, group: bool = False) -> None:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass  # gone already (or reused by someone else's process: not ours to touch)


@dataclass
class Supervisor:
    """Start ``children``, wait for a signal (or a child's exit), then stop every descendant within ``grace_s``."""

    children: Sequence[Child]
    grace_s: float = 10.0
    say: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    _started: list[_Started] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _hurry: threading.Event = field(default_factory=threading.Event)
    _signum: int = signal.SIGTERM

    def start(self) -> None:
        reaper = _become_subreaper()
        for child in self.children:
            proc = subprocess.Popen(list(child.argv), cwd=child.cwd, env=child.env, start_new_session=True)
            self._started.append(_Started(child, proc))
            self.say(f"started {child.name} (pid {proc.pid}, its own process group): {shlex.join(child.argv)}")
        if not reaper:
            self.say("note: not a child subreaper here; processes that leave their group may outlive a stop")

    def _on_signal(self, signum: int, _frame: object) -> None:
        if self._stop.is_set():
            self._hurry.set()  # a second Ctrl-C: no more waiting
            return
        self._signum = signum
        self._stop.set()

    def run(self) -> int:
        """Start, wait, stop; 0 when stopped by a signal with every child gone, 1 when a child exited by itself."""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_signal)
        self.start()
        failed = None
        while not self._stop.wait(0.2):
            self._reap_orphans()
            failed = next((s for s in self._started if s.proc.poll() is not None), None)
            if failed is not None:
                self.say(f"{failed.child.name} exited by itself (status {failed.proc.returncode}); stopping the rest")
                break
        else:
            self.say(f"{signal.Signals(self._signum).name}: stopping {', '.join(s.child.name for s in self._started)}")
        self.stop(self._signum)
        return 1 if failed is not None else 0

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Forward ``sig`` to every child's group and every descendant, wait ``grace_s``, SIGKILL what is left."""
        groups = {s.proc.pid for s in self._started if s.proc.poll() is None}
        for pgid in groups:
            _signal(pgid, sig, group=True)
        for pid in descendants():
            if _pgid(pid) not in groups:
                _signal(pid, sig)  # left its group (a new session of its own): told directly
        deadline = time.monotonic() + self.grace_s
        while self._alive() and time.monotonic() < deadline and not self._hurry.is_set():
            time.sleep(0.1)
        left = descendants()
        for pid in left:
            _signal(pid, signal.SIGKILL)
        for pgid in groups:
            _signal(pgid, signal.SIGKILL, group=True)
        if left:
            self.say(f"killed {len(left)} processes still running after {self.grace_s:g} s: {', '.join(map(str, sorted(left)))}")
        end = time.monotonic() + 5.0
        while self._alive() and time.monotonic() < end:
            time.sleep(0.05)
        for s in self._started:
            code = s.proc.poll()
            s.outcome = "still running" if code is None else ("killed" if code == -signal.SIGKILL else f"exit {code}")
        self.say("stopped: " + ", ".join(f"{s.child.name} ({s.outcome})" for s in self._started))

    def _alive(self) -> bool:
        self._reap_orphans()
        running = any(s.proc.poll() is None for s in self._started)
        return running or bool(descendants())

    def _reap_orphans(self) -> None:
        """Collect exited processes re-parented to us (we are their subreaper); our own children are Popen's."""
        mine = {s.proc.pid for s in self._started}
        for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
            if entry.isdigit() and int(entry) not in mine:
                info = _stat(entry)
                if info is not None and info[0] == os.getpid() and info[1] == "Z":
                    try:
                        os.waitpid(int(entry), os.WNOHANG)
                    except ChildProcessError:
                        pass


def _pgid(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None

