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
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import yaml

from context_store._common import as_utc, sha256
from context_store.errors import InputRejected, SourceError
from context_store.settings import SourceConfig

__all__ = [
    "COMPANY_SUFFIXES",
    "USER_SUFFIXES",
    "ParsedDocument",
    "SourceFile",
    "UserSnapshotInput",
    "is_ignored_name",
    "list_source_files",
    "normalize_facts",
    "parse_company_file",
    "read_bytes",
    "read_user_file",
]

COMPANY_SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html"}
USER_SUFFIXES = {".json", ".jsonl", ".ndjson"}
REASONS = (
    "unreadable", "too_large", "empty", "binary", "invalid_utf8", "unsupported_type",
    "malformed_json", "missing_user_id", "not_an_object", "bad_timestamp",
)


@dataclass(frozen=True)
class SourceFile:
    source_name: str
    root: Path
    path: Path
    rel_path: str
    size: int
    mtime: datetime
    mtime_ns: int = 0  # exact, for comparing with what a sync observed (state.observed)


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
    try:
        st = path.stat()
    except OSError:
        return None  # vanished between listing and stat: the next scan sees the truth
    if not stat.S_ISREG(st.st_mode):  # the stat above already says; is_file() would stat again
        return None
    return SourceFile(
        source_name=source.name,
        root=root,
        path=path,
        rel_path=path.relative_to(root).as_posix(),
        size=st.st_size,
        mtime=datetime.fromtimestamp(st.st_mtime, tz=timezone.utc),
        mtime_ns=st.st_mtime_ns,
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


def read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise InputRejected("too_large", f"{path} is {size:,} bytes; the limit is {max_bytes:,} (max_file_bytes)")
        with path.open("rb") as fh:
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
        meta, text = _split_front_matter(text)
        title = str(meta.get("title") or _first_heading(text) or _title_from_name(path))
    elif kind == "html":
        title, text = _html_to_markdown(text)
        title = title or _first_heading(text) or _title_from_name(path)
    else:
        title = _title_from_name(path)
    text = text.strip()
    if not text:
        raise InputRejected("empty", f"{path} has no text after removing markup and front matter")
    meta = {k: (v if isinstance(v, (str, int, float, bool)) or v is None else str(v)) for k, v in meta.items()}
    return ParsedDocument(title=title.strip(), text=text, content_hash=sha256(data), meta=meta)


# libyaml's safe loader when present: front matter parsing is on the hot path of a full sync
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*\n", re.DOTALL)


def _split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    try:
        meta = yaml.load(match.group(1), Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return {}, text  # keep the text whole rather than guess where the body starts
    return (meta if isinstance(meta, dict) else {}), text[match.end():]


def _first_heading(text: str) -> str | None:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return None


def _title_from_name(path: Path) -> str:
    return re.sub(r"[-_]+", " ", path.stem).strip().capitalize()


class _HTMLText(HTMLParser):
    _BLOCK = {"p", "div", "li", "tr", "br", "section", "article", "ul", "ol", "table", "pre", "blockquote"}
    _SKIP = {"script", "style", "noscript", "template", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.title = ""
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in self._SKIP:
            self._skip += 1
        elif re.fullmatch(r"h[1-6]", tag):
            self.parts.append("\n\n" + "#" * int(tag[1]) + " ")
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in self._SKIP:
            self._skip = max(0, self._skip - 1)
        elif re.fullmatch(r"h[1-6]", tag) or tag in self._BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
        elif not self._skip:
            self.parts.append(re.sub(r"\s+", " ", data))


def _html_to_markdown(html: str) -> tuple[str, str]:
    parser = _HTMLText()
    parser.feed(html)
    parser.close()
    text = "".join(parser.parts)
    text = "\n".join(line.strip() for line in text.splitlines())
    text = re.sub(r"\n{3,}", "\n\n", text)
    return parser.title.strip(), text.strip()


# --- user state -------------------------------------------------------------------------

def read_user_file(
    source_name: str, path: Path, data: bytes
) -> Iterator[tuple[str, UserSnapshotInput | InputRejected]]:
    """Yield ``(where, snapshot or rejection)`` per record; ``where`` is the file, or ``file:line``."""
    text = _decode(path, data)
    if path.suffix.lower() == ".json":
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            yield str(path), InputRejected(
                "malformed_json", f"{path}: {exc.msg} at line {exc.lineno} column {exc.colno}"
            )
            return
        yield str(path), _snapshot(source_name, path, record, where=str(path))
        return
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield where, InputRejected("malformed_json", f"{path} line {lineno}: {exc.msg} at column {exc.colno}")
            continue
        yield where, _snapshot(source_name, path, record, where=f"{path} line {lineno}")


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
