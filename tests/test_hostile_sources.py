"""Source files written to hurt (issue 16): amplifying front matter and headings (class 5)."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from context_store.errors import InputRejected
from context_store.index.chunking import _heading, chunk_document
from context_store.settings import ChunkingConfig
from context_store.state.sources import MAX_META_VALUE_CHARS, parse_company_file

LAUGHS = b"""---
title: Laughs
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
---
# Laughs

Body.
"""


def test_front_matter_aliases_are_refused_not_expanded() -> None:
    assert len(LAUGHS) < 400
    started = time.perf_counter()
    with pytest.raises(InputRejected) as refused:
        parse_company_file(Path("laughs.md"), LAUGHS)
    assert refused.value.reason == "bad_front_matter" and "aliases" in refused.value.detail
    assert time.perf_counter() - started < 0.5
    # an anchor-looking character in a plain value is no alias
    doc = parse_company_file(Path("ok.md"), b"---\ntitle: Rock & roll *live*\n---\n# Rock\n\nBody.\n")
    assert doc.title == "Rock & roll *live*"


def test_each_front_matter_value_is_capped() -> None:
    raw = ("---\ntitle: " + "T" * 8_000 + "\ntags: [" + ", ".join(["tag"] * 1000) + "]\n---\n# Heading\n\nBody.\n").encode()
    doc = parse_company_file(Path("big.md"), raw)
    assert len(doc.title) <= MAX_META_VALUE_CHARS + 1
    assert all(len(str(v)) <= MAX_META_VALUE_CHARS + 1 for v in doc.meta.values())
    too_big = ("---\n" + "".join(f"k{i}: {'v' * 60}\n" for i in range(400)) + "---\nBody.\n").encode()
    with pytest.raises(InputRejected, match="front matter is"):
        parse_company_file(Path("many.md"), too_big)


@pytest.mark.parametrize("width", [2_000, 20_000])
def test_a_long_heading_line_is_parsed_in_linear_time(width: int) -> None:
    config = ChunkingConfig()
    for line in ("#" + " " * (width - 2) + "x", "# a" + " " * (width - 4) + "x", "# " + " " * (width // 2) + "###" + " " * (width // 2) + "y"):
        started = time.perf_counter()
        chunks = chunk_document("company/x.md", "X", f"{line}\n\nA paragraph.\n", config)
        assert time.perf_counter() - started < 0.05, f"{width}-character heading line"
        assert chunks and chunks[0].text.endswith("A paragraph.")


_OLD_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")  # the pattern the parser replaced: same results, cubic time


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="#  \t\u00a0ab#", max_size=24))
def test_the_linear_heading_parser_finds_what_the_pattern_found(line: str) -> None:
    old = _OLD_HEADING.match(line)
    assert _heading(line) == ((len(old.group(1)), old.group(2)) if old else None)
