from context_store.index.chunking import chunk_document
from context_store.settings import ChunkingConfig

DOC = """# Shipping

Intro paragraph.

## Rates

Standard shipping costs 4.95 EUR.

Express costs 9.95 EUR.

## Times

```
## not a heading inside a fence
```

EU orders arrive in 3 days.
"""


def test_sections_carry_their_heading_trail() -> None:
    chunks = chunk_document("c/shipping.md", "Shipping", DOC, ChunkingConfig())
    assert [c.heading for c in chunks] == ["Shipping", "Shipping › Rates", "Shipping › Times"]
    assert "4.95 EUR" in chunks[1].text and "9.95 EUR" in chunks[1].text
    assert "## not a heading inside a fence" in chunks[2].text


def test_chunking_is_deterministic_and_ids_are_stable() -> None:
    a = chunk_document("c/shipping.md", "Shipping", DOC, ChunkingConfig())
    b = chunk_document("c/shipping.md", "Shipping", DOC, ChunkingConfig())
    assert [(c.chunk_id, c.chunk_hash) for c in a] == [(c.chunk_id, c.chunk_hash) for c in b]


def test_editing_one_paragraph_changes_only_its_chunk() -> None:
    edited = DOC.replace("3 days", "2 days")
    before = {c.chunk_hash for c in chunk_document("d", "Shipping", DOC, ChunkingConfig())}
    after = {c.chunk_hash for c in chunk_document("d", "Shipping", edited, ChunkingConfig())}
    assert len(after - before) == 1 and len(before - after) == 1


def test_settings_are_part_of_the_hash() -> None:
    small = chunk_document("d", "Shipping", DOC, ChunkingConfig(max_chars=300))
    large = chunk_document("d", "Shipping", DOC, ChunkingConfig(max_chars=2000))
    assert {c.chunk_hash for c in small}.isdisjoint({c.chunk_hash for c in large})


def test_long_sections_split_under_the_limit_at_sentence_boundaries() -> None:
    body = " ".join(f"Sentence number {i} explains one more detail of the plan." for i in range(120))
    chunks = chunk_document("d", "Long", f"# Long\n\n{body}\n", ChunkingConfig(max_chars=400))
    assert len(chunks) > 5
    assert all(len(c.text) <= 400 for c in chunks)
    assert all(c.text.rstrip().endswith(".") for c in chunks)


def test_duplicate_sections_get_distinct_ids() -> None:
    doc = "# FAQ\n\n## Q\n\nSame.\n\n## Q\n\nSame.\n"
    chunks = chunk_document("d", "FAQ", doc, ChunkingConfig())
    assert len({c.chunk_id for c in chunks}) == len(chunks) == 2
