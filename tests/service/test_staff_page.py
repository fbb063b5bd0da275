"""The /staff queue page in a real headless browser (Debian chromium driven by playwright)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from context_store.index.embed.fake import HashingEmbedder
from context_store.index.ingest import ingest
from context_store.retrieve.retriever import retrieve
from context_store.route.decision import Reason
from context_store.route.questions import get_question, route_question
from context_store.store.context_store import ContextStore
from context_store.store.models import StaffAnswer
from service.app import create_app
from tests.conftest import open_with_staff_answers

API_KEY = "page-key-9"
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def _chromium() -> str | None:
    """Find chromium, installing the Debian package (root) and playwright (pip) when missing."""
    found = next((p for p in CHROMIUM_CANDIDATES if os.access(p, os.X_OK)), None)
    if found is None and shutil.which("apt-get") and hasattr(os, "geteuid") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], capture_output=True, timeout=900)
        found = next((p for p in CHROMIUM_CANDIDATES if os.access(p, os.X_OK)), None)
    return found


def _playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "playwright"], capture_output=True, timeout=600)
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            return False
    return True


@pytest.fixture(scope="module")
def browser_path() -> str:
    path = _chromium()
    if path is None:
        pytest.skip("no chromium binary and it could not be installed (needs root and apt-get): the staff page browser test cannot run")
    if not _playwright():
        pytest.skip("playwright is not installed and pip could not install it: the staff page browser test cannot run")
    return path


@pytest.fixture
def served(sources: dict[str, Path]) -> Iterator[tuple[str, ContextStore, str]]:
    import uvicorn

    emb = HashingEmbedder()
    store = open_with_staff_answers(
        sources,
        api_keys=[{"name": "maria", "key": API_KEY, "role": "staff"}],
    )
    ingest(store, emb)
    text = "Can I return a <b>lamp</b> after 40 days?"  # markup in a question must be shown, not rendered
    result = retrieve(store, emb, text, user_id="u-1")
    qid = route_question(store, result, [Reason("repeat_contact", "asked twice in 48 h", 0.9, source="routing")],
                         vector=emb.encode([text])[0], model=emb.name, conversation_id="conv-77").question_id
    app = create_app(store=store, embedder=emb)
    app.state.embedder = emb
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", store, qid
    finally:
        server.should_exit = True
        thread.join(10)


def test_staff_page_login_working_memory_and_answer(browser_path: str, served: tuple[str, ContextStore, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, store, qid = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(f"{base}/staff")
            expect(page).to_have_url(f"{base}/staff/login")  # protected: no key, no queue
            page.fill("input[name=api_key]", "wrong")
            page.click("button[type=submit]")
            expect(page.get_by_role("alert")).to_contain_text("not valid")
            page.fill("input[name=api_key]", API_KEY)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{base}/staff")
            card = page.locator(f"section[data-question-id='{qid}']")
            expect(card.locator("h2")).to_have_text("Can I return a <b>lamp</b> after 40 days?")
            expect(card).to_contain_text("repeat_contact")
            expect(card).to_contain_text("asked twice in 48 h")
            expect(card).to_contain_text("user u-1")
            expect(card).to_contain_text("conversation conv-77")
            card.locator("summary", has_text="Context the system had").click()
            expect(card.locator(".ctx").first).to_contain_text("@ v-")  # document versions shown
            card.locator("summary", has_text="User state").click()
            expect(card).to_contain_text("DHL")
            # what gets published: the question staff confirm (prefilled, redacted, one line) and who gets the answer
            expect(card.locator("input[name=question]")).to_have_value("Can I return a <b>lamp</b> after 40 days?")
            expect(card.locator("input[name=scope][value=user]")).to_be_visible()
            card.locator("input[name=question]").fill("Can I return a lamp after 40 days?")
            card.locator("textarea[name=answer]").fill("Lamps get store credit up to day 60.")
            card.locator("input[name=author]").fill("maria")
            card.locator("button[type=submit]", has_text="Send answer").click()
            expect(page.get_by_role("status")).to_contain_text(qid)
            expect(page.get_by_role("status")).to_contain_text("stored and retrievable")
            expect(page.locator("#count")).to_contain_text("0 open question")
        finally:
            browser.close()
    q = get_question(store, qid)
    assert q["status"] == "answered" and q["answer"]["author"] == "maria"
    with store.session() as s:
        answer = s.get(StaffAnswer, q["answer"]["answer_id"])
        assert answer is not None and answer.channel == "staff_page" and answer.file_path
    assert "store credit" in Path(answer.file_path).read_text()
    # the page's answer went through the same path: indexed and retrievable before the page said so
    assert get_question(store, qid)["answer"]["retrievable_at"] is not None


def test_staff_forms_refuse_posts_without_the_page_token(served: tuple[str, ContextStore, str]) -> None:
    import httpx

    base, store, qid = served
    with httpx.Client(base_url=base) as client:
        r = client.post(f"/staff/questions/{qid}/answer", data={"answer": "x", "author": "y"}, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"] == "/staff/login"  # not signed in
        client.post("/staff/login", data={"api_key": API_KEY})
        r = client.post(f"/staff/questions/{qid}/answer", data={"answer": "x", "author": "y", "csrf": "forged"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "bad_csrf_token"
    assert get_question(store, qid)["status"] == "open"


def test_api_docs_render_offline_from_the_packaged_swagger_ui(browser_path: str, served: tuple[str, ContextStore, str]) -> None:
    """/docs with every request off this server refused, as on a host without internet."""
    from playwright.sync_api import expect, sync_playwright

    base, _, _ = served
    outside: list[str] = []

    def only_this_server(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith(base):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", only_this_server)
            page.goto(f"{base}/docs")
            expect(page.locator(".swagger-ui .info .title")).to_contain_text("freshcontext", timeout=15_000)
            expect(page.locator(".opblock-summary-path", has_text="/v1/retrieve")).to_be_visible()
        finally:
            browser.close()
    assert outside == []
