"""Source files written to hurt (issue 16): links out of a root (class 3), files that break a parser
(class 4), amplifying front matter and headings (class 5)."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlmodel import select

from context_store.errors import InputRejected
from context_store.index.chunking import _heading, chunk_document
from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import apply_company_paths, ingest
from context_store.retrieve import retrieve
from context_store.settings import ChunkingConfig
from context_store.state import journal
from context_store.state.documents import sync_company_sources
from context_store.state.front_matter import MAX_META_VALUE_CHARS
from context_store.state.skipped_inputs import open_skips
from context_store.state.sources import parse_company_file
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, DocumentVersion, UserRecord
from tests.conftest import open_on_sources

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


# --- class 3: links never leave a source root ---------------------------------------------------


def _secret_home(sources: dict[str, Path]) -> Path:
    config = sources["home"] / "freshcontext.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("api_keys:\n  - name: bot\n    key: sk-live-TOPSECRET-4242\n    role: admin\n")
    return config


def test_links_out_of_a_source_root_are_never_followed_by_the_scan_or_a_named_sync(
    sources: dict[str, Path], fake_embedder: HashingEmbedder
) -> None:
    config = _secret_home(sources)
    store = open_on_sources(sources)
    company = sources["company"]
    os.symlink("/etc/passwd", company / "passwd.md")
    os.symlink(config, company / "config.md")
    os.symlink(config.parent, company / "home")  # a folder link: never walked into
    os.symlink(company / "refunds.md", company / "alias.md")  # inside the root: the target is listed as itself
    os.symlink(config, sources["users"] / "u-9.json")
    report = ingest(store, fake_embedder)
    with store.session() as s:
        docs = {d.doc_id for d in s.exec(select(Document)).all()}
        texts = " ".join(v.text for v in s.exec(select(DocumentVersion)).all())
        skips = {(Path(k.path).name, k.reason) for k in open_skips(s)}
    assert docs == {"company/refunds.md", "company/billing/invoices.md"}
    assert "TOPSECRET" not in texts and "root:x:0:0" not in texts
    assert {("passwd.md", "link_outside_root"), ("config.md", "link_outside_root"), ("u-9.json", "link_outside_root")} <= skips
    assert report.users.new == 2
    # the watcher's way in: it journals no link out of a root, and a sync of named paths (the journal's,
    # the warm path's) follows none either
    links = [company / "passwd.md", company / "config.md", company / "home" / "freshcontext.yaml"]
    assert [journal.entry_for_path(store.settings, p) for p in links] == [None, None, None]
    named = sync_company_sources(store, paths=links)
    assert named.new == 0 and named.changed == 0
    assert apply_company_paths(store, fake_embedder, links).company.new == 0  # type: ignore[union-attr]
    hits = retrieve(store, fake_embedder, "api keys key role admin secret root bin bash", k=20).results
    assert not any("TOPSECRET" in h.text or "root:x" in h.text for h in hits)


# --- class 4: one bad file never stops a sync ------------------------------------------------------


def test_every_per_file_failure_is_a_skip_and_the_other_files_sync(
    sources: dict[str, Path], store: ContextStore, fake_embedder: HashingEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import context_store.state.documents as documents

    company, users = sources["company"], sources["users"]
    fd = os.open(os.fsencode(company) + b"/r\xe9sum\xe9-latin1.md", os.O_CREAT | os.O_WRONLY)  # a name that is not UTF-8
    os.write(fd, b"# Latin-1 name\n\nText.\n")
    os.close(fd)
    (company / "explodes.md").write_text("# Explodes\n\nThe parser raises on this one.\n")
    (company / "new.md").write_text("# Gift cards\n\nGift cards never expire.\n")
    (users / "u-deep.json").write_text('{"user_id": "u-deep", "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    (users / "u-surrogate.json").write_text('{"user_id": "u-\\ud800", "plan": "Free"}')
    (users / "u-3.json").write_text('{"user_id": "u-3", "captured_at": "2026-11-20T10:00:00Z", "plan": "Plus"}')
    real = documents.parse_company_file

    def parse(path, data):  # type: ignore[no-untyped-def]
        if path.name == "explodes.md":
            raise ValueError("a parser bug")
        return real(path, data)

    monkeypatch.setattr(documents, "parse_company_file", parse)
    report = ingest(store, fake_embedder)  # no exception: one bad file never fails the run
    with store.session() as s:
        docs = {d.doc_id for d in s.exec(select(Document)).all()}
        skips = {k.reason: k for k in open_skips(s)}
        users_now = {u.user_id for u in s.exec(select(UserRecord)).all()}
    assert docs == {"company/refunds.md", "company/billing/invoices.md", "company/new.md"}
    assert {"undecodable_name", "parse_failed", "too_deeply_nested", "invalid_unicode"} <= set(skips)
    assert "r\\xe9sum\\xe9-latin1.md" in skips["undecodable_name"].path and "rename" in skips["undecodable_name"].detail
    assert "ValueError: a parser bug" in skips["parse_failed"].detail
    assert users_now == {"u-1", "u-2", "u-3"} and report.users.new == 3
    assert retrieve(store, fake_embedder, "gift cards expire").results[0].doc_id == "company/new.md"


def test_a_path_sync_naming_a_file_whose_name_is_not_utf8_skips_it_and_syncs_the_rest(
    sources: dict[str, Path], store: ContextStore, fake_embedder: HashingEmbedder
) -> None:
    company = sources["company"]
    ingest(store, fake_embedder)
    latin1 = Path(os.fsdecode(os.fsencode(company) + b"/r\xe9sum\xe9-latin1.md"))
    latin1.write_text("# Latin-1 name\n\nText.\n")
    refunds = company / "refunds.md"
    refunds.write_text(refunds.read_text().replace("30 days", "14 days"))
    report = sync_company_sources(store, paths=[latin1, refunds])  # as a caller naming changed files would
    assert (report.changed, report.skipped) == (1, 1)
    assert [i["reason"] for i in report.skipped_inputs] == ["undecodable_name"]
