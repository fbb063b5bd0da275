from pathlib import Path

import pytest

from context_store.errors import InputRejected
from context_store.state.sources import normalize_facts, parse_company_file, read_bytes, read_user_file


def test_front_matter_gives_title_and_meta(tmp_path: Path) -> None:
    p = tmp_path / "a.md"
    data = b"---\ntitle: Plans\ncategory: billing\n---\n# Ignored heading\n\nBody.\n"
    doc = parse_company_file(p, data)
    assert doc.title == "Plans" and doc.meta["category"] == "billing" and doc.text.startswith("# Ignored")


def test_html_becomes_markdown_with_headings(tmp_path: Path) -> None:
    html = b"<html><head><title>Ship</title><style>x{}</style></head><body><h1>Shipping</h1><p>Fast &amp; free.</p>" \
        b"<h2>EU</h2><ul><li>3 days</li></ul><script>evil()</script></body></html>"
    doc = parse_company_file(tmp_path / "s.html", html)
    assert doc.title == "Ship"
    assert "# Shipping" in doc.text and "## EU" in doc.text and "Fast & free." in doc.text and "- 3 days" in doc.text
    assert "evil" not in doc.text and "x{}" not in doc.text


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("bin.md", b"\x89PNG\x00\x00data", "binary"),
        ("latin.md", "caf\xe9".encode("latin-1"), "invalid_utf8"),
        ("empty.md", b"   \n", "empty"),
        ("only-front-matter.md", b"---\ntitle: x\n---\n", "empty"),
        ("image.png", b"PNGDATA", "unsupported_type"),
    ],
)
def test_bad_company_files_are_rejected_with_a_reason(tmp_path: Path, name: str, data: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(InputRejected) as info:
        parse_company_file(path, read_bytes(path, 1_000_000))
    assert info.value.reason == reason
    assert str(path) in info.value.detail


def test_huge_files_are_rejected_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.md"
    path.write_bytes(b"a" * 5000)
    with pytest.raises(InputRejected) as info:
        read_bytes(path, 1000)
    assert info.value.reason == "too_large"


def test_jsonl_export_yields_each_user_and_each_bad_line(tmp_path: Path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_text('{"user_id": "a", "plan": "Pro"}\n{not json\n[1, 2]\n{"plan": "x"}\n\n{"user_id": "b"}\n')
    items = list(read_user_file("users", path, path.read_bytes()))
    reasons = [(where.rsplit(":", 1)[1], item.reason if isinstance(item, InputRejected) else item.user_id) for where, item in items]
    assert reasons == [("1", "a"), ("2", "malformed_json"), ("3", "not_an_object"), ("4", "missing_user_id"), ("6", "b")]


def test_facts_are_keyed_by_item_id() -> None:
    facts = normalize_facts(
        {"user_id": "u", "orders": [{"order_id": "A-9", "status": "shipped"}], "account": {"status": "active"}, "open_tickets": []}
    )
    assert {f["key"] for f in facts} == {"orders/A-9", "account", "open_tickets"}
    assert "A-9" in next(f["text"] for f in facts if f["key"] == "orders/A-9")
