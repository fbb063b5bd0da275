"""Front matter: the YAML block at the top of a Markdown file, read so that a file cannot amplify.

YAML aliases are refused (a 300-byte file of nested ``&a``/``*a`` expands to tens of
megabytes of stored metadata), and so is a block over ``MAX_FRONT_MATTER_BYTES`` or one
holding text that is not valid Unicode: each is a skip with reason ``bad_front_matter`` or
``invalid_unicode``. Each value is stored as a scalar of at most ``MAX_META_VALUE_CHARS``.
Front matter that is not YAML keeps the text whole.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from context_store.errors import InputRejected

__all__ = ["MAX_FRONT_MATTER_BYTES", "MAX_META_VALUE_CHARS", "split_front_matter"]

# Front matter is a few fields (title, tags): these bound what one file can make us store.
MAX_FRONT_MATTER_BYTES = 16 * 1024
MAX_META_VALUE_CHARS = 1000

# libyaml's safe loader when present: front matter parsing is on the hot path of a full sync
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)---[ \t]*\n", re.DOTALL)


def split_front_matter(path: Path, text: str) -> tuple[dict[str, Any], str]:
    """The front matter of a Markdown file (its values capped) and the text after it; raises ``InputRejected``."""
    found, rest = _parse(path, text)
    meta = {str(k)[:100]: _capped(v) for k, v in found.items()}
    try:
        json.dumps(meta, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InputRejected("invalid_unicode", f"{path}: front matter holds an unpaired surrogate; write valid UTF-8 text") from exc
    return meta, rest


def _parse(path: Path, text: str) -> tuple[dict[Any, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    block = match.group(1)
    if len(block) > MAX_FRONT_MATTER_BYTES:
        raise InputRejected("bad_front_matter", f"{path}: front matter is {len(block):,} characters; the limit is {MAX_FRONT_MATTER_BYTES:,}")
    if ("&" in block or "*" in block) and _has_alias(block):  # the fast path: no & or *, no alias
        raise InputRejected("bad_front_matter", f"{path}: front matter uses YAML aliases (*name); write each value out")
    try:
        meta = yaml.load(block, Loader=_YAML_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        return {}, text  # keep the text whole rather than guess where the body starts
    except RecursionError as exc:
        raise InputRejected("bad_front_matter", f"{path}: front matter is nested too deeply") from exc
    return (meta if isinstance(meta, dict) else {}), text[match.end():]


def _has_alias(block: str) -> bool:
    try:
        return any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(block, Loader=_YAML_LOADER))
    except yaml.YAMLError:
        return False  # not YAML: the caller keeps the text whole


def _capped(value: Any) -> Any:
    """A front matter value as stored: a scalar, or its text, at most ``MAX_META_VALUE_CHARS`` long."""
    if not (isinstance(value, (str, int, float, bool)) or value is None):
        value = str(value)
    if isinstance(value, str) and len(value) > MAX_META_VALUE_CHARS:
        value = value[:MAX_META_VALUE_CHARS] + "…"
    return value
