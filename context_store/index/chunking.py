"""Deterministic, heading-aware chunking.

A chunk is one Markdown section (its heading trail plus its paragraphs), split at
paragraph, then sentence, boundaries only when it is longer than ``max_chars``. Sections
are chunked independently, so editing one paragraph changes the chunk that holds it and
leaves every other chunk's text, and therefore its hash and embedding, untouched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from context_store._common import sha256
from context_store.settings import ChunkingConfig

__all__ = ["Chunk", "chunk_document"]

_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    chunk_id: str
    chunk_hash: str
    heading: str
    text: str


def chunk_document(doc_id: str, title: str, text: str, config: ChunkingConfig) -> list[Chunk]:
    fingerprint = config.fingerprint()
    pieces: list[tuple[str, str]] = []
    for trail, paragraphs in _sections(title, text):
        heading = " › ".join(trail)
        budget = max(config.max_chars - len(heading) - 1, config.max_chars // 2)
        for body in _pack(paragraphs, budget):
            pieces.append((heading, f"{heading}\n{body}" if heading else body))
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for ordinal, (heading, chunk_text) in enumerate(pieces):
        chunk_hash = sha256(f"{fingerprint}\n{chunk_text}")
        n = seen.get(chunk_hash, 0)
        seen[chunk_hash] = n + 1
        chunk_id = f"{doc_id}#{chunk_hash[:16]}" + (f"-{n}" if n else "")
        chunks.append(Chunk(ordinal=ordinal, chunk_id=chunk_id, chunk_hash=chunk_hash, heading=heading, text=chunk_text))
    return chunks


def _heading(line: str) -> tuple[int, str] | None:
    r"""An ATX heading's level and name, or None; linear in the line's length.

    The same headings the pattern ``^(#{1,6})\s+(.*?)\s*#*\s*$`` found, but with string
    methods: that pattern backtracks in cubic time on a ``#`` line with a long run of spaces
    (2,000 spaces took 17 s), and one such line stalled a whole sync.
    """
    level = len(line) - len(line.lstrip("#"))
    if not 1 <= level <= 6 or len(line) == level or not line[level].isspace():
        return None
    return level, line[level:].strip().rstrip("#").rstrip()


def _sections(title: str, text: str) -> list[tuple[list[str], list[str]]]:
    """Split Markdown into (heading trail, paragraphs); code fences are never split inside."""
    sections: list[tuple[list[str], list[str]]] = []
    trail: list[tuple[int, str]] = []
    paragraphs: list[str] = []
    current: list[str] = []
    in_fence = False

    def end_paragraph() -> None:
        if current:
            paragraph = "\n".join(current).strip()
            if paragraph:
                paragraphs.append(paragraph)
            current.clear()

    def end_section() -> None:
        end_paragraph()
        if paragraphs:
            names = [name for _, name in trail]
            if not names or names[0] != title:
                names = [title, *names] if title else names
            sections.append((names, paragraphs.copy()))
        paragraphs.clear()

    for line in text.split("\n"):
        # cheap prefix tests first: this loop sees every line of every document
        stripped = line.lstrip()
        if stripped[:3] in ("```", "~~~"):
            in_fence = not in_fence
            current.append(line)
            continue
        heading = _heading(line) if line[:1] == "#" and not in_fence else None
        if heading:
            end_section()
            level, name = heading
            trail = [(lvl, n) for lvl, n in trail if lvl < level]
            trail.append((level, name))
        elif not stripped and not in_fence:
            end_paragraph()
        else:
            current.append(line.rstrip())
    end_section()
    return sections


def _pack(paragraphs: list[str], budget: int) -> list[str]:
    """Greedy packing of whole paragraphs into bodies of at most ``budget`` characters."""
    units: list[str] = []
    for paragraph in paragraphs:
        units.extend(_split_long(paragraph, budget) if len(paragraph) > budget else [paragraph])
    bodies: list[str] = []
    current = ""
    for unit in units:
        candidate = f"{current}\n\n{unit}" if current else unit
        if len(candidate) <= budget or not current:
            current = candidate
        else:
            bodies.append(current)
            current = unit
    if current:
        bodies.append(current)
    return bodies


def _split_long(paragraph: str, budget: int) -> list[str]:
    parts: list[str] = []
    current = ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > budget:
            cut = sentence.rfind(" ", 0, budget)
            cut = cut if cut > budget // 2 else budget
            if current:
                parts.append(current)
                current = ""
            parts.append(sentence[:cut].strip())
            sentence = sentence[cut:].strip()
        candidate = f"{current} {sentence}" if current else sentence
        if len(candidate) <= budget:
            current = candidate
        else:
            parts.append(current)
            current = sentence
    if current:
        parts.append(current)
    return [p for p in parts if p]
