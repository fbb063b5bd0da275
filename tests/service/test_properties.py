"""Properties that hold for any input (issue 16, item 6): whatever a caller sends to ``/v1/retrieve``
(body, headers) and whatever files land in a source, there is no 500, no user sees another
user's facts, and nothing already stored is lost. Examples are few (CI has two cores)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlmodel import select

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.retrieve import retrieve
from context_store.store.context_store import ContextStore
from context_store.store.models import Document, DocumentVersion
from service.app import create_app

USERS = ["u-1", "u-2", "u-3"]
AGENT = {"X-API-Key": "agent-key"}
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> ContextStore:
    base = tmp_path_factory.mktemp("props")
    company, users = base / "company", base / "users"
    company.mkdir()
    users.mkdir()
    (company / "refunds.md").write_text("# Refund policy\n\n## Window\n\nRefunds within 30 days of delivery.\n")
    (company / "shipping.md").write_text("# Shipping\n\nOrders ship in 2 days with DHL.\n")
    for user in USERS:
        (users / f"{user}.json").write_text(json.dumps({
            "user_id": user, "captured_at": "2026-11-20T10:00:00Z", "account": {"plan": f"plan-of-{user}"},
            "orders": [{"order_id": f"ORD-{user}", "status": "shipped"}],
        }))
    (base / "home").mkdir()
    (base / "home" / "freshcontext.yaml").write_text("api_keys: [{name: bot, key: agent-key, role: agent}]\n")  # a link target below
    store = ContextStore.open(
        base / "home", company_sources=[{"name": "company", "path": str(company)}], user_sources=[{"name": "users", "path": str(users)}],
        user_state_max_age_hours=24 * 3650,
    )
    ingest(store, HashingEmbedder())
    return store


@pytest.fixture(scope="module")
def client(kb: ContextStore) -> Iterator[TestClient]:
    with TestClient(create_app(store=kb, embedder=HashingEmbedder(), warm_up=False), raise_server_exceptions=False) as c:
        yield c


def _assert_own_facts_only(body: dict[str, Any], asked: Any) -> None:
    user = body.get("user")
    if user is None:
        return
    assert user["user_id"] == asked
    facts = " ".join(f["text"] for f in user["facts"])
    assert not any(f"plan-of-{o}" in facts or f"ORD-{o}" in facts for o in USERS if o != asked)


text = st.text(max_size=60)  # any code point, unpaired surrogates included
hostile = st.sampled_from(["\ud800", "u-1\udfff", "u-2' OR '1'='1", "x" * 300, "\x00", "😀", "#" + " " * 500 + "x", "%s%n", ""])
values = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**30), max_value=10**30), st.floats(allow_nan=False),
                   text, hostile, st.lists(text, max_size=3), st.dictionaries(text, text, max_size=3))
bodies = st.fixed_dictionaries(
    {"query": st.one_of(st.sampled_from(["refund window", "where is my order"]), hostile, text)},
    optional={
        "user_id": st.one_of(st.sampled_from(USERS), hostile, text),
        "k": st.one_of(st.integers(min_value=-5, max_value=200), values),
        "as_of": st.one_of(st.sampled_from(["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-11-21T00:00:00Z"]), hostile),
        "filters": st.one_of(values, st.fixed_dictionaries({}, optional={"doc_ids": st.lists(st.one_of(text, hostile), max_size=2),
                                                                          "kinds": values})),
        "mode": st.one_of(st.sampled_from(["hybrid", "vector", "text", "rrf"]), hostile),
        "conversation_id": values,
        "extra": values,
    },
)


@FAST
@given(body=bodies)
def test_any_retrieve_body_is_answered_without_a_500_and_only_with_the_askers_facts(client: TestClient, body: dict[str, Any]) -> None:
    raw = json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as a \ud800 escape, as attackers send it
    r = client.post("/v1/retrieve", content=raw, headers={**AGENT, "content-type": "application/json"})
    assert r.status_code < 500, r.text
    assert r.headers["content-type"].startswith("application/json")
    if r.status_code == 200:
        _assert_own_facts_only(r.json(), body.get("user_id"))
    else:
        assert r.json()["error"]["code"] and r.json()["error"]["message"]


header_values = st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b and b"\x00" not in b)


@FAST
@given(key=st.one_of(st.just(b"agent-key"), header_values), auth=st.one_of(st.none(), header_values),
       cookie=st.one_of(st.none(), header_values), content_type=st.one_of(st.just(b"application/json"), header_values),
       user=st.sampled_from(USERS))
def test_any_headers_are_answered_without_a_500(client: TestClient, key: bytes, auth: bytes | None, cookie: bytes | None,
                                                 content_type: bytes, user: str) -> None:
    headers: dict[str, Any] = {"x-api-key": key.strip() or b"-", "content-type": content_type}
    if auth is not None:
        headers["authorization"] = b"Bearer " + auth
    if cookie is not None:
        headers["cookie"] = b"freshcontext_staff=" + cookie
    r = client.post("/v1/retrieve", content=json.dumps({"query": "where is my order", "user_id": user}).encode(), headers=headers)
    assert r.status_code < 500, r.text
    if r.status_code == 200:
        _assert_own_facts_only(r.json(), user)


names = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="/\x00", blacklist_categories=["Cs"]), min_size=1, max_size=20).map(str.encode),
    st.sampled_from([b"r\xe9sum\xe9", b"\xff\xfe", b".hidden", b"a" * 200, b"-rf", b"link"]),  # names that are not UTF-8 too
)
contents = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=300).map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.sampled_from([
        b"---\na: &a [1]\nb: [*a, *a]\n---\nx", b"#" + b" " * 3000 + b"x", b"---\ntitle: " + b"T" * 20_000 + b"\n---\nx",
        b'{"user_id": "u-9", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b'{"user_id": "u-\\ud800"}',
        b'{"user_id": "u-9", "captured_at": "not a date"}',
    ]),
)
links = st.sampled_from([None, "/etc/passwd", "home/freshcontext.yaml", "company/refunds.md"])  # where a file is a link to


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(files=st.lists(st.tuples(st.sampled_from(["company", "users"]), names, st.sampled_from([b".md", b".txt", b".html", b".json", b".jsonl", b""]),
                                contents, links), min_size=1, max_size=4))
def test_any_source_files_sync_without_an_error_and_lose_nothing_stored(kb: ContextStore, files: list[tuple[str, bytes, bytes, bytes, str | None]]) -> None:
    company = Path(kb.settings.company_sources[0].path)
    users = Path(kb.settings.user_sources[0].path)
    batch = f"batch-{uuid.uuid4().hex[:8]}"
    for folder, name, suffix, data, link in files:
        target = (company if folder == "company" else users) / batch
        target.mkdir(exist_ok=True)
        path = os.fsencode(target) + b"/" + name + suffix
        try:
            if link is None:
                with open(path, "wb") as fh:
                    fh.write(data)
            else:
                os.symlink(link if link.startswith("/") else os.fspath(company.parent / link), path)
        except OSError:
            continue  # a name this file system refuses, or one written twice
    try:
        report = ingest(kb, HashingEmbedder())  # never raises, whatever the files hold
        assert not report.company.source_errors and not report.users.source_errors
        with kb.session() as s:
            current = {d.doc_id for d in s.exec(select(Document)).all() if d.current_version_id}
            texts = " ".join(v.text for v in s.exec(select(DocumentVersion)).all())
        assert {"company/refunds.md", "company/shipping.md"} <= current  # nothing stored is lost
        assert "root:x:0:0" not in texts and "agent-key" not in texts  # nothing from outside a root
        top = retrieve(kb, HashingEmbedder(), "refunds within 30 days of delivery", k=3).results
        assert any("30 days" in h.text for h in top)
        for user in USERS:
            facts = " ".join(f.text for f in retrieve(kb, HashingEmbedder(), "order plan", user_id=user).user_state)
            assert f"plan-of-{user}" in facts and not any(f"plan-of-{o}" in facts for o in USERS if o != user)
    finally:
        shutil.rmtree(company / batch, ignore_errors=True)
        shutil.rmtree(users / batch, ignore_errors=True)
