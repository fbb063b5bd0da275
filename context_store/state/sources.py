"""Reading sources: company files become (title, text), user exports become snapshot records.

Every way an input can be unusable maps to one ``InputRejected`` reason code, so the
skip list in ``status`` and in asset metadata says exactly what to fix.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from context_store._common import as_utc, sha256
from context_store.errors import InputRejected, SourceError
from context_store.settings import SourceConfig
from context_store.state.front_matter import MAX_META_VALUE_CHARS, split_front_matter
from context_store.state.html import html_to_markdown

__all__ = [
    "COMPANY_SUFFIXES",
    "USER_SUFFIXES",
    "ParsedDocument",
    "SourceFile",
    "UserSnapshotInput",
    "as_rejection",
    "has_utf8_name",
    "is_ignored_name",
    "list_source_files",
    "normalize_facts",
    "parse_company_file",
    "printable_path",
    "read_bytes",
    "read_source",
    "read_user_file",
]

COMPANY_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html"}
USER_SUFFIXES = {".json", ".jsonl", ".ndjson"}
REASONS = (
    "unreadable", "too_large", "empty", "binary", "invalid_utf8", "unsupported_type",
    "malformed_json", "missing_user_id", "not_an_object", "bad_timestamp", "bad_front_matter", "too_deeply_nested",
    "undecodable_name", "link_outside_root", "invalid_unicode", "parse_failed",
)


@dataclass(frozen=True)
class SourceFile:
    """A file below a source root; ``rejected``: it is there, but cannot be an input (a sync records why)."""

    source_name: str
    root: Path
    path: Path
    rel_path: str
    size: int
    mtime: datetime
    rejected: InputRejected | None = None
    mtime_ns: int = 0  # exact, for comparing with what a sync observed (state.observed)

    @property
    def where(self) -> str:
        """The path as text that can be stored and shown, whatever bytes its name holds."""
        return printable_path(self.path)


def has_utf8_name(path: str | Path) -> bool:
    """Whether ``path`` is valid UTF-8; a file whose name is not is never read (``undecodable_name``)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable_path(path: str | Path) -> str:
    """``path`` with any byte of its name that is not UTF-8 shown as ``\\xNN`` (a file system may hold any bytes)."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@dataclass
class ParsedDocument:
    title: str
    text: str
    content_hash: str
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class UserSnapshotInput:
    user_id: str
    captured_at: datetime
    content_hash: str
    facts: list[dict[str, str]]
    raw: dict[str, Any]
    source_name: str
    source_path: str


def is_ignored_name(name: str) -> bool:
    """Hidden files and editors' temporary files are never inputs."""
    return (
        name.startswith((".", "~", "#"))
        or name.endswith(("~", ".swp", ".swx", ".tmp", ".part", ".crdownload"))
        or name in {"4913"}  # vim's write test file
    )


def list_source_files(source: SourceConfig, only: Iterable[str | Path] | None = None) -> list[SourceFile]:
    """All candidate files below a source root, sorted; a missing root is an error, not emptiness.

    ``only`` names the files wanted (a journal batch): those alone are looked at, so a
    change to one file costs a few ``stat`` calls, not a walk of the whole tree. The same
    files are kept as a walk would keep: outside the root, under a hidden folder, an
    editor's temporary name, gone, or not a regular file, a path is left out.
    """
    root = Path(source.path)
    if not root.exists():
        raise SourceError(f"source {source.name!r}: root {root} does not exist (unmounted?)")
    if not root.is_dir():
        raise SourceError(f"source {source.name!r}: root {root} is not a directory")
    if only is not None:
        return _named_files(source, root, only)
    found: list[SourceFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if is_ignored_name(name):
                continue
            path = Path(dirpath) / name
            file = _source_file(source, root, path)
            if file is not None:
                found.append(file)
    return found


def _source_file(source: SourceConfig, root: Path, path: Path) -> SourceFile | None:
    """The file at ``path``, or None when it is no input (gone, not a regular file, a link within the root).

    A symbolic link is never followed out of the root: a link to ``/etc/passwd`` or to the
    home's ``freshcontext.yaml`` is listed as rejected (``link_outside_root``), never read. A
    link to a file inside the root is left out: that file is listed under its own path.
    """
    try:
        st = path.lstat()
        if stat.S_ISLNK(st.st_mode):
            target = path.resolve()
            resolved_root = root.resolve()
            if target == resolved_root or resolved_root in target.parents:
                return None
            return _rejected(source, root, path, st, InputRejected(
                "link_outside_root", f"{printable_path(path)} is a link to {printable_path(target)}, outside the source root; links are not followed"))
    except (OSError, RuntimeError):
        return None  # vanished between listing and stat (or a link loop): the next scan sees the truth
    if not stat.S_ISREG(st.st_mode):  # the stat above already says; is_file() would stat again
        return None
    if not has_utf8_name(path):
        return _rejected(source, root, path, st, InputRejected(
            "undecodable_name", f"{printable_path(path)}: the file name is not valid UTF-8; rename the file"))
    return SourceFile(
        source_name=source.name,
        root=root,
        path=path,
        rel_path=path.relative_to(root).as_posix(),
        size=st.st_size,
        mtime=datetime.fromtimestamp(st.st_mtime, tz=timezone.utc),
        mtime_ns=st.st_mtime_ns,
    )


def _rejected(source: SourceConfig, root: Path, path: Path, st: os.stat_result, why: InputRejected) -> SourceFile:
    return SourceFile(
        source_name=source.name, root=root, path=path, rel_path=printable_path(path.relative_to(root).as_posix()),
        size=st.st_size, mtime=datetime.fromtimestamp(st.st_mtime, tz=timezone.utc), mtime_ns=st.st_mtime_ns, rejected=why,
    )


def _named_files(source: SourceConfig, root: Path, only: Iterable[str | Path]) -> list[SourceFile]:
    resolved_root = root.resolve()
    found: dict[Path, SourceFile] = {}
    for named in only:
        try:
            rel = Path(named).resolve().relative_to(resolved_root)
        except ValueError:
            continue  # another source's file
        if not rel.parts or any(part.startswith(".") for part in rel.parts[:-1]) or is_ignored_name(rel.name):
            continue
        path = root / rel
        file = _source_file(source, root, path)
        if file is not None:
            found[path] = file
    return [found[p] for p in sorted(found)]


def as_rejection(where: str, exc: Exception) -> InputRejected:
    """Any error reading or parsing one input, as that input's skip: an ``InputRejected`` as it is,
    anything else a parser raised (a library bug, a RecursionError, ...) as ``parse_failed``."""
    if isinstance(exc, InputRejected):
        return exc
    return InputRejected("parse_failed", f"{where}: {type(exc).__name__}: {str(exc)[:300]}")


def read_source(file: SourceFile, max_bytes: int) -> bytes:
    """The bytes of a listed file, or the ``InputRejected`` that says why it is no input."""
    if file.rejected is not None:
        raise file.rejected
    return read_bytes(file.path, max_bytes)


def read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputRejected("too_large", f"{path} is {size:,} bytes; the limit is {max_bytes:,} (max_file_bytes)")
        # O_NOFOLLOW: a file swapped for a link after it was listed is refused, not followed
        with os.fdopen(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as fh:
            data = fh.read(max_bytes + 1)
    except InputRejected:
        raise
    except OSError as exc:
        raise InputRejected("unreadable", f"{path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise InputRejected("too_large", f"{path} grew past {max_bytes:,} bytes while being read")
    if not data.strip():
        raise InputRejected("empty", f"{path} is empty")
    if b"\x00" in data[:8192]:
        raise InputRejected("binary", f"{path} contains NUL bytes; it looks like a binary file, not text")
    return data


def _decode(path: Path, data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputRejected("invalid_utf8", f"{path}: invalid UTF-8 at byte {exc.start} ({exc.reason})") from exc
    return text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")


def parse_company_file(path: Path, data: bytes) -> ParsedDocument:
    """Turn raw bytes into a titled text; Markdown stays Markdown so the chunker sees headings."""
    kind = COMPANY_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise InputRejected(
            "unsupported_type",
            f"{path}: {path.suffix or 'no extension'} is not one of {', '.join(sorted(COMPANY_SUFFIXES))}",
        )
    text = _decode(path, data)
    meta: dict[str, Any] = {}
    if kind == "markdown":
        meta, text = split_front_matter(path, text)
        title = str(meta.get("title") or _first_heading(text) or _title_from_name(path))
    elif kind == "html":
        title, text = html_to_markdown(text)
        title = title or _first_heading(text) or _title_from_name(path)
    else:
        title = _title_from_name(path)
    text = text.strip()
    if not text:
        raise InputRejected("empty", f"{path} has no text after removing markup and front matter")
    return ParsedDocument(title=title.strip()[:MAX_META_VALUE_CHARS], text=text, content_hash=sha256(data), meta=meta)


def _first_heading(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return None


def _title_from_name(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().capitalize()


# --- user state -------------------------------------------------------------------------

def read_user_file(
    source_name: str, path: Path, data: bytes
) -> Iterator[tuple[str, UserSnapshotInput | InputRejected]]:
    """Yield ``(where, snapshot or rejection)`` per record; ``where`` is the file, or ``file:line``."""
    text = _decode(path, data)
    if path.suffix.lower() == ".json":
        yield str(path), _record(source_name, path, text, str(path))
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield f"{path}:{lineno}", _record(source_name, path, line, f"{path} line {lineno}")


def _record(source_name: str, path: Path, text: str, where: str) -> UserSnapshotInput | InputRejected:
    """One JSON record as a snapshot, or why it cannot be one; a record never raises."""
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}" if where == str(path) else f"column {exc.colno}"
        return InputRejected("malformed_json", f"{where}: {exc.msg} at {at}")
    except RecursionError:
        return InputRejected("too_deeply_nested", f"{where}: JSON nested too deeply to read")
    try:
        return _snapshot(source_name, path, record, where=where)
    except RecursionError:
        return InputRejected("too_deeply_nested", f"{where}: JSON nested too deeply to turn into facts")


def _snapshot(source_name: str, path: Path, record: Any, *, where: str) -> UserSnapshotInput | InputRejected:
    if not isinstance(record, dict):
        return InputRejected("not_an_object", f"{where}: expected a JSON object, got {type(record).__name__}")
    user_id = record.get("user_id")
    if not isinstance(user_id, (str, int)) or not str(user_id).strip():
        return InputRejected("missing_user_id", f"{where}: no non-empty 'user_id' field")
    captured = record.get("captured_at")
    if captured is None:
        captured_at = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc)
    else:
        try:
            captured_at = datetime.fromisoformat(str(captured).replace("Z", "+00:00"))
        except ValueError:
            return InputRejected("bad_timestamp", f"{where}: captured_at {captured!r} is not ISO-8601")
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, default=str)
    try:
        canonical.encode("utf-8")
    except UnicodeEncodeError:
        return InputRejected("invalid_unicode", f"{where}: a string holds an unpaired surrogate (\\ud800-\\udfff); write valid UTF-8 text")
    return UserSnapshotInput(
        user_id=str(user_id).strip(),
        captured_at=as_utc(captured_at),
        content_hash=sha256(canonical),
        facts=normalize_facts(record),
        raw=record,
        source_name=source_name,
        source_path=str(path),
    )


_ID_KEYS = ("id", "order_id", "ticket_id", "subscription_id", "invoice_id", "promise_id", "sku")


def normalize_facts(record: dict[str, Any]) -> list[dict[str, str]]:
    """Flatten a snapshot into short, self-describing facts an agent can quote.

    One fact per top-level section, or per item of a list section (an order, a ticket, a
    promise), keyed so the same item keeps its key across snapshots.
    """
    facts: list[dict[str, str]] = []
    for section, value in record.items():
        if section in ("user_id", "captured_at"):
            continue
        label = section.replace("_", " ")
        if isinstance(value, list):
            if not value:
                facts.append({"key": section, "text": f"{label}: none"})
            for i, item in enumerate(value):
                if isinstance(item, dict):
                    item_id = next((str(item[k]) for k in _ID_KEYS if item.get(k) not in (None, "")), str(i))
                    body = "; ".join(f"{k.replace('_', ' ')}: {_fmt(v)}" for k, v in item.items())
                    facts.append({"key": f"{section}/{item_id}", "text": f"{label} {item_id} — {body}"})
                else:
                    facts.append({"key": f"{section}/{i}", "text": f"{label}: {_fmt(item)}"})
        elif isinstance(value, dict):
            body = "; ".join(f"{k.replace('_', ' ')}: {_fmt(v)}" for k, v in value.items())
            facts.append({"key": section, "text": f"{label} — {body}"})
        else:
            facts.append({"key": section, "text": f"{label}: {_fmt(value)}"})
    return facts


def _fmt(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return ", ".join(_fmt(v) for v in value) or "none"
    if value is None:
        return "none"
    return str(value)
