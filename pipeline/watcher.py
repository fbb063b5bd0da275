"""The watcher: file events → change journal. It only watches; applying is the warm path's job.

A watchdog observer per source root (inotify where the kernel sees changes; polling on
network and container mounts, where it does not) feeds a debouncer. On inotify, a file
whose writer has closed it (or that was renamed into place) is journaled at once: its
state is final, and waiting longer only adds lag to every edit. Anything else waits until
the path has been quiet for ``debounce_s``: a deletion (git and some tools delete, then
recreate), a copy still in progress (until its close, or ``write_grace_s``), a polled
root (which sees no close), and more events on a path journaled less than ``debounce_s``
ago, so a burst of writes is two rows (its first state and its last), not one per write.
An editor's temp-file-and-rename is one row for the renamed file. Dagster sensors read the
journal; with ``freshcontext watch --apply`` a :class:`context_store.index.warm.WarmApplier`
applies it at once in the same long-lived process, with the model loaded a single time.

On start, and whenever a missing root comes back, a rescan row is journaled: what changed
while nobody watched is found by re-hashing, not lost.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from context_store.settings import SourceConfig
from context_store.state import JournalEntry, journal, source_for
from context_store.store import ContextStore

__all__ = ["NETWORK_FILESYSTEMS", "SourceWatcher", "filesystem_type", "observer_mode_for"]

log = logging.getLogger(__name__)

# Filesystems whose changes made elsewhere (another host, the container host) raise no inotify event.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "afs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs",
        "virtiofs", "vboxsf", "vmhgfs", "davfs", "fuse", "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.rclone",
        "fuse.grpcfuse", "fuse.osxfs", "fakeowner", "drvfs",
    }
)
_EVENT_TYPES = [FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileDeletedEvent, FileMovedEvent, DirDeletedEvent, DirMovedEvent]


def filesystem_type(path: str | Path, mounts_file: str = "/proc/mounts") -> str | None:
    """The type of the filesystem holding ``path`` (longest matching mount point), if known."""
    target = str(Path(path).resolve())
    best, best_type = "", None
    try:
        with open(mounts_file, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) < 3:
                    continue
                mount = parts[1].replace("\\040", " ")
                if (target == mount or target.startswith(mount.rstrip("/") + "/")) and len(mount) >= len(best):
                    best, best_type = mount, parts[2]
    except OSError:
        return None
    return best_type


def observer_mode_for(path: str | Path, requested: str = "auto") -> str:
    """``inotify`` or ``polling`` for one root: ``auto`` polls on network and container mounts."""
    if requested in ("inotify", "native"):
        return "inotify"
    if requested == "polling":
        return "polling"
    fs = filesystem_type(path) or ""
    return "polling" if fs in NETWORK_FILESYSTEMS or fs.startswith("fuse.") else "inotify"


@dataclass
class _Pending:
    first: float
    last: float
    deleted: bool = False
    writing: bool = False
    polled: bool = False
    events: int = 0

    def final(self) -> bool:
        """The last inotify event left the file complete: closed after writing, or renamed into place."""
        return not (self.writing or self.deleted or self.polled)


@dataclass
class WatchStats:
    events: int = 0
    journaled: int = 0
    duplicates: int = 0
    rescans: int = 0
    flushes: int = 0
    errors: list[str] = field(default_factory=list)


class _Handler(FileSystemEventHandler):
    def __init__(self, watcher: "SourceWatcher", polling: bool) -> None:
        self.watcher = watcher
        self.polling = polling

    def on_any_event(self, event: FileSystemEvent) -> None:
        w = self.watcher
        src = os.fsdecode(event.src_path)
        if event.is_directory:
            if event.event_type == "deleted" or (event.event_type == "moved" and self.polling):
                w.request_rescan(src, reason=f"directory {event.event_type}")
            return  # created/moved directories: watchdog reports their files one by one
        if event.event_type == "moved":
            w.note(src, deleted=True, polled=self.polling)
            w.note(os.fsdecode(event.dest_path), polled=self.polling)
        elif event.event_type == "deleted":
            w.note(src, deleted=True, polled=self.polling)
        elif event.event_type == "closed":
            w.note(src)
        elif event.event_type in ("created", "modified"):
            # inotify reports the close of a write; polling never does, so it relies on quiet time
            w.note(src, writing=not self.polling, polled=self.polling)


class SourceWatcher:
    """Watch every configured source root and journal what changed.

    ``debounce_s``: quiet time before a path is journaled, unless inotify saw it closed after
    writing and it was not journaled within ``debounce_s`` (see the module). ``write_grace_s``: how long to
    wait for the close of a file still open for writing before journaling it anyway.
    ``burst_gap_s``: events closer together than this are one burst (see :meth:`backlog`).
    """

    def __init__(
        self,
        store: ContextStore,
        *,
        mode: str = "auto",
        debounce_s: float = 0.2,
        write_grace_s: float = 5.0,
        poll_interval_s: float = 1.0,
        root_check_s: float = 5.0,
        burst_gap_s: float = 0.01,
        on_journal: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.mode = mode
        self.debounce_s = debounce_s
        self.write_grace_s = write_grace_s
        self.poll_interval_s = poll_interval_s
        self.root_check_s = root_check_s
        self.burst_gap_s = burst_gap_s
        self.on_journal = on_journal
        self.stats = WatchStats()
        self._pending: dict[str, _Pending] = {}
        self._journaling = 0  # paths taken off _pending by a flush that has not written them yet
        self._journaled_at: dict[str, float] = {}  # path -> when a flush last took it, for debounce_s
        self._last_event = float("-inf")
        self._noted = threading.Event()  # a path may be due at once: the flush loop need not wait its tick
        self._rescans: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._observers: dict[str, BaseObserver] = {}
        self._watched: dict[str, Any] = {}  # root -> ObservedWatch
        self._modes: dict[str, str] = {}
        self.missing_roots: set[str] = set()

    # -- sources ---------------------------------------------------------------------------

    def sources(self) -> list[tuple[str, SourceConfig]]:
        s = self.store.settings
        return [("company", src) for src in s.company_sources] + [("user", src) for src in s.user_sources]

    def _observer(self, mode: str) -> BaseObserver:
        if mode not in self._observers:
            observer = PollingObserver(timeout=self.poll_interval_s) if mode == "polling" else Observer()
            observer.start()
            self._observers[mode] = observer
        return self._observers[mode]

    def _schedule(self, kind: str, source: SourceConfig) -> bool:
        root = str(Path(source.path).resolve())
        if root in self._watched:
            return True
        if not Path(root).is_dir():
            if root not in self.missing_roots:
                log.error(
                    "source %r (%s): root %s is missing or unmounted; not watched, its documents are kept; "
                    "checking again every %g s", source.name, kind, root, self.root_check_s,
                )
            self.missing_roots.add(root)
            return False
        mode = observer_mode_for(root, self.mode)
        try:
            watch = self._observer(mode).schedule(_Handler(self, mode == "polling"), root, recursive=True, event_filter=_EVENT_TYPES)
        except OSError as exc:  # inotify watch limit, permissions: polling still works
            if mode == "polling":
                raise
            log.warning("inotify cannot watch %s (%s); polling it instead", root, exc)
            mode = "polling"
            watch = self._observer(mode).schedule(_Handler(self, True), root, recursive=True, event_filter=_EVENT_TYPES)
        self._watched[root], self._modes[root] = watch, mode
        self.missing_roots.discard(root)
        log.info("watching %s source %r at %s (%s)", kind, source.name, root, mode)
        return True

    def modes(self) -> dict[str, str]:
        return dict(self._modes)

    # -- events ----------------------------------------------------------------------------

    def note(self, path: str, *, deleted: bool = False, writing: bool = False, polled: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            self._last_event = now
            self.stats.events += 1
            p = self._pending.get(path)
            if p is None:
                p = self._pending[path] = _Pending(first=now, last=now)
            p.last, p.deleted, p.writing, p.events = now, deleted, (writing and not deleted), p.events + 1
            p.polled = p.polled or polled
            if p.final():
                self._noted.set()

    def backlog(self) -> int:
        """Paths seen changing and not journaled yet (quiet time still running, or being journaled),
        plus one while events are still arriving (the last one less than ``burst_gap_s`` ago):
        a file closed at once is journaled at once, and the rest of its burst (a checkout, a
        many-file commit) must not find the applier busy with that first file alone."""
        with self._lock:
            arriving = time.monotonic() - self._last_event < self.burst_gap_s
            return len(self._pending) + self._journaling + arriving

    def request_rescan(self, path: str, *, reason: str) -> None:
        held = source_for(self.store.settings, path)
        if held is None:
            return
        with self._lock:
            self._rescans[(held.state_kind, held.source.name)] = reason

    def _due(self, now: float) -> tuple[list[tuple[str, _Pending]], list[tuple[str, str, str]]]:
        due: list[tuple[str, _Pending]] = []
        taken = time.monotonic()
        with self._lock:
            self._journaled_at = {k: t for k, t in self._journaled_at.items() if taken - t < self.debounce_s}
            for path, p in list(self._pending.items()):
                idle = now - p.last
                if p.final() and path not in self._journaled_at:
                    quiet = 0.0  # closed after writing: final now (the leading edge of a burst)
                else:
                    # a polled file still being written shows up once per poll: wait out one more poll
                    quiet = self.debounce_s + (self.poll_interval_s if p.polled else 0.0)
                if idle >= quiet and (not p.writing or idle >= self.write_grace_s):
                    due.append((path, self._pending.pop(path)))
                    self._journaled_at[path] = taken
            rescans = [(kind, name, reason) for (kind, name), reason in self._rescans.items()]
            self._rescans.clear()
            self._journaling += len(due)
        return due, rescans

    def flush(self, *, force: bool = False) -> int:
        """Journal every path that is due (all of them with ``force``); returns rows added."""
        due, rescans = self._due(float("inf") if force else time.monotonic())
        try:
            added = self._journal(due, rescans)
        finally:
            with self._lock:
                self._journaling -= len(due)
        if added and self.on_journal:  # after the backlog dropped: a woken applier sees it settled
            self.on_journal(added)
        return added

    def _journal(self, due: list[tuple[str, _Pending]], rescans: list[tuple[str, str, str]]) -> int:
        if not due and not rescans:
            return 0
        settings = self.store.settings
        entries: list[JournalEntry] = []
        for path, p in due:
            entry = journal.entry_for_path(settings, path, deleted=p.deleted and not Path(path).exists())
            if entry is not None:
                entries.append(entry)
        for kind, name, reason in rescans:
            root = next((s.path for k, s in self.sources() if k == kind and s.name == name), "")
            entries.append(journal.rescan_entry(kind, name, root, reason=reason))
        try:
            added = journal.append(self.store, entries)
        except Exception as exc:  # the database is busy or gone: keep the paths for the next flush
            log.error("could not write the change journal (%s); retrying", exc)
            self.stats.errors = [*self.stats.errors[-9:], str(exc)]
            with self._lock:
                for path, p in due:
                    self._pending.setdefault(path, p)
                for kind, name, reason in rescans:
                    self._rescans.setdefault((kind, name), reason)
            return 0
        self.stats.journaled += added
        self.stats.rescans += len(rescans)
        self.stats.duplicates += len(entries) - added
        self.stats.flushes += 1
        return added

    # -- life cycle ------------------------------------------------------------------------

    def start(self, *, rescan: bool = True) -> "SourceWatcher":
        # open the database before any thread does: two threads creating the schema at once collide
        _ = self.store.engine
        for kind, source in self.sources():
            if self._schedule(kind, source) and rescan:
                self._rescans[(kind, source.name)] = "watcher started"
        self._spawn(self._flush_loop, "journal-flush")
        self._spawn(self._root_loop, "root-check")
        self.flush(force=False)
        return self

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _flush_loop(self) -> None:
        while not self._stop.is_set():
            # a closed file wakes the loop (it is due at once); quiet windows end within a tick
            self._noted.wait(0.05)
            self._noted.clear()
            if not self._stop.is_set():
                self.flush()

    def _root_loop(self) -> None:
        while not self._stop.wait(self.root_check_s):
            self.check_roots()

    def check_roots(self) -> None:
        """Unwatch roots that vanished (unmount); watch and rescan roots that came back."""
        for kind, source in self.sources():
            root = str(Path(source.path).resolve())
            if root in self._watched and not Path(root).is_dir():
                observer = self._observers.get(self._modes.get(root, ""))
                try:
                    if observer is not None:
                        observer.unschedule(self._watched[root])
                except (KeyError, OSError):
                    pass
                self._watched.pop(root, None)
                log.error("source %r: root %s vanished (unmounted?); its documents are kept", source.name, root)
                self.missing_roots.add(root)
            elif root not in self._watched and self._schedule(kind, source):
                with self._lock:
                    self._rescans[(kind, source.name)] = "root came back"

    def stop(self) -> None:
        self._stop.set()
        self._noted.set()
        for observer in self._observers.values():
            observer.stop()
        for observer in self._observers.values():
            observer.join(timeout=5)
        for thread in self._threads:
            thread.join(timeout=5)
        self.flush(force=True)

    def __enter__(self) -> "SourceWatcher":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
