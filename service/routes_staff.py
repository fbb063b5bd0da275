"""Staff-facing HTTP: the signed answer webhook, routed-question endpoints and the ``/staff`` queue page.

Every way an answer arrives (webhook, JSON API, the queue page's form) goes through
``_accept_answer``: store durably, write the answer file into the staff source, then
index it in the background (the warm path). A 2xx is only ever returned after the
answer row has committed.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import json
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, BackgroundTasks, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.exc import IntegrityError

from context_store.errors import ConfigError, FreshContextError, InvalidRequest, NotFound
from context_store.index.embed.factory import build_embedder
from context_store.index.embed.protocol import Embedder
from context_store.learn.answers import index_answers, learning_metrics, store_answer, write_answer_file
from context_store.route.outbox import OutboxWorker, outbox_counts
from context_store.route.questions import QuestionConflict, assign_question, get_question, list_questions, set_status
from context_store.route.triggers import RoutingConfig, routing_config
from context_store.route.webhooks import WebhookRejected, verify
from context_store.state.sources import sha256
from context_store.store.context_store import ContextStore
from context_store.store.models import StaffAnswer, WebhookDelivery
from service.auth import ENV_KEYS
from service.errors import error_body

__all__ = ["router"]

log = logging.getLogger(__name__)
WEBHOOK_PATH = "/v1/webhooks/staff-answer"
SESSION_COOKIE = "freshcontext_staff"


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Deliver the outbox from the serving process when an outbound endpoint is configured."""
    store: ContextStore | None = getattr(app.state, "store", None)
    worker = None
    if store is not None:
        config = routing_config(store.settings)
        if config.outbound_url:
            worker = OutboxWorker(
                store, interval=1.0, secrets=config.outbound_secrets, max_attempts=config.outbound_max_attempts,
                backoff=config.outbound_backoff_seconds, backoff_cap=config.outbound_backoff_max_seconds,
                timeout=config.outbound_timeout_seconds,
            )
            worker.start()
            app.state.outbox_worker = worker
    try:
        yield
    finally:
        if worker is not None:
            worker.stop()


router = APIRouter(lifespan=_lifespan)


def _store(request: Request) -> ContextStore:
    service = getattr(request.app.state, "service", None)  # the serving index, which follows promotions
    return service.serving().store if service is not None else request.app.state.store


def _config(request: Request) -> RoutingConfig:
    return routing_config(_store(request).settings)


def _embedder(request: Request) -> Embedder:
    """The serving process's embedder (the retrieval API's, already loaded); built lazily otherwise."""
    embedder = getattr(request.app.state, "embedder", None)
    service = getattr(request.app.state, "service", None)
    if embedder is None and service is not None:
        embedder = service.embedder
    if embedder is None:
        settings = _store(request).settings
        embedder = build_embedder(settings.embedding, settings.home)
        request.app.state.embedder = embedder
    return embedder


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(error_body(code, message, details), status_code=status)


def _error_for(exc: FreshContextError) -> JSONResponse:
    if isinstance(exc, NotFound):
        return _error(404, "unknown_question", str(exc))
    if isinstance(exc, QuestionConflict):
        return _error(409, "already_answered" if "answer" in str(exc) else "invalid_transition", str(exc))
    if isinstance(exc, InvalidRequest):
        return _error(422, "invalid_body", str(exc))
    if isinstance(exc, ConfigError):
        return _error(503, "not_configured", str(exc))
    return _error(400, "bad_request", str(exc))


# --- authentication: an API key header for JSON, a cookie made from it for the page ---------


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    return header or (auth[7:].strip() if auth.lower().startswith("bearer ") else None)


def _session_token(api_key: str) -> str:
    # Derived, not the key itself: a leaked cookie does not reveal the key, and removing the
    # key from the config ends every session made with it.
    return hmac.new(api_key.encode(), b"freshcontext-staff-session", hashlib.sha256).hexdigest()


def _keys(request: Request) -> list[str]:
    # The same keys the retrieval API accepts (service.auth.KeyRing): the config file and the environment.
    env = [k.strip() for k in os.environ.get(ENV_KEYS, "").split(",") if k.strip()]
    return [k for k in dict.fromkeys([*_store(request).settings.api_keys, *env]) if k]


def _authorised(request: Request) -> bool:
    keys = _keys(request)
    if not keys:
        return False  # secure by default, like /v1: no keys configured, nobody gets in
    key = _presented_key(request)
    if key and any(hmac.compare_digest(key, k) for k in keys):
        return True
    cookie = request.cookies.get(SESSION_COOKIE, "")
    return bool(cookie) and any(hmac.compare_digest(cookie, _session_token(k)) for k in keys)


# --- the answer path shared by webhook, API and page --------------------------------------


class _AnswerIndexer:
    """The warm path of one serving process: at most one indexing pass at a time.

    A burst of answers would otherwise start one LanceDB writer per answer, all committing
    to the same table (and all losing commit races to an ingest running meanwhile). An
    answer arriving during a pass is taken by that pass's next round; nothing waits on a
    request thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wanted: set[str] = set()
        self._running = False
        self._target: tuple[ContextStore, Embedder] | None = None

    def submit(self, store: ContextStore, embedder: Embedder, answer_id: str) -> None:
        with self._lock:
            self._wanted.add(answer_id)
            self._target = (store, embedder)  # the newest: it follows a promotion
            if self._running:
                return
            self._running = True
        while True:
            with self._lock:
                batch, self._wanted = self._wanted, set()
                if not batch or self._target is None:
                    self._running = False
                    return
                store, embedder = self._target
            self._index(store, embedder, sorted(batch))

    @staticmethod
    def _index(store: ContextStore, embedder: Embedder, answer_ids: list[str]) -> None:
        """Write (if needed) and index; a failure leaves the answers for the next ingest."""
        try:
            paths = []
            for answer_id in answer_ids:
                with store.session() as session:
                    answer = session.get(StaffAnswer, answer_id)
                    path = answer.file_path if answer else None
                paths.append(Path(path) if path else write_answer_file(store, answer_id))
            index_answers(store, embedder, paths)
        except Exception:  # the embedder may be down; the stored answers are indexed by the next ingest
            log.exception("staff answer(s) %s stored but not indexed yet; the next ingest will index them", ", ".join(answer_ids))


_INDEXER_GUARD = threading.Lock()


def _indexer(request: Request) -> _AnswerIndexer:
    with _INDEXER_GUARD:
        indexer = getattr(request.app.state, "answer_indexer", None)
        if indexer is None:
            indexer = request.app.state.answer_indexer = _AnswerIndexer()
    return indexer


def _accept_answer(
    request: Request, background: BackgroundTasks, question_id: str, author: str, text: str, channel: str,
    webhook_id: str | None = None, body_hash: str | None = None,
) -> dict[str, Any]:
    store, config = _store(request), _config(request)
    answer = store_answer(
        store, question_id, author=author, text=text, channel=channel, webhook_id=webhook_id,
        webhook_endpoint=WEBHOOK_PATH if webhook_id is not None else None, body_sha256=body_hash or "", config=config,
    )
    response = {"status": "stored", "answer_id": answer.answer_id, "question_id": question_id, "doc_id": answer.doc_id}
    try:
        write_answer_file(store, answer.answer_id, config=config)
    except (OSError, FreshContextError) as exc:
        log.error("answer %s stored; its file could not be written yet: %s", answer.answer_id, exc)
    if config.index_answers_inline:
        background.add_task(_indexer(request).submit, store, _embedder(request), answer.answer_id)
        response["indexing"] = "scheduled"
    else:
        response["indexing"] = "deferred to the next ingest"
    return response


class StaffAnswerIn(BaseModel):
    question_id: str = Field(min_length=1, max_length=64)
    answer: str = Field(min_length=1)
    author: str = Field(min_length=1, max_length=200)


@router.post(
    WEBHOOK_PATH, tags=["staff"], status_code=200,
    summary="Receive a staff answer (Standard Webhooks signature)",
    responses={400: {"description": "missing headers, bad timestamp or invalid JSON"}, 401: {"description": "bad signature or stale timestamp"},
               404: {"description": "unknown question"}, 409: {"description": "replayed webhook-id or already answered"},
               413: {"description": "body too large"}, 422: {"description": "body fields invalid"}},
)
async def staff_answer_webhook(request: Request, background: BackgroundTasks) -> Response:
    """Body: ``{"question_id", "answer", "author"}``, signed with one of ``routing.webhook_secrets``.

    A replay of a processed ``webhook-id`` gets 409 ``duplicate_delivery`` with the
    original result; senders should treat it as delivered.
    """
    store, config = _store(request), _config(request)
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > config.max_webhook_body_bytes:
        return _error(413, "body_too_large", f"body is {declared} bytes; the limit is {config.max_webhook_body_bytes}")
    body = bytearray()
    async for piece in request.stream():
        body.extend(piece)
        if len(body) > config.max_webhook_body_bytes:
            return _error(413, "body_too_large", f"body exceeds {config.max_webhook_body_bytes} bytes")
    raw = bytes(body)
    try:
        webhook_id, _ = verify(config.webhook_secrets, request.headers, raw, tolerance=config.webhook_tolerance_seconds)
    except WebhookRejected as exc:
        return _error(exc.status, exc.reason, exc.detail)
    except ConfigError as exc:
        return _error(503, "not_configured", str(exc))
    with store.session() as session:
        seen = session.get(WebhookDelivery, webhook_id)
    if seen is not None:
        return _error(409, "duplicate_delivery", f"webhook-id {webhook_id} was processed at {seen.received_at.isoformat()}; treat it as delivered",
                      {"original": seen.response})
    try:
        payload = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _error(400, "invalid_json", f"body is not valid JSON: {exc}")
    if not isinstance(payload, dict):
        return _error(422, "invalid_body", "body must be a JSON object with question_id, answer and author")
    try:
        data = StaffAnswerIn.model_validate({**payload, "answer": payload.get("answer", payload.get("text"))})
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) + f" ({e['msg']})" for e in exc.errors())
        return _error(422, "invalid_body", f"invalid fields: {fields}")
    try:
        result = _accept_answer(request, background, data.question_id, data.author, data.answer, "webhook", webhook_id, sha256(raw))
    except FreshContextError as exc:
        return _error_for(exc)
    except IntegrityError:
        # A concurrent delivery of the same id or a second answer won the race: nothing stored twice.
        return _error(409, "duplicate_delivery", f"webhook-id {webhook_id} or question {data.question_id} was processed concurrently")
    return JSONResponse(result, status_code=200)


# --- routed questions (JSON) --------------------------------------------------------------


class AnswerIn(BaseModel):
    answer: str = Field(min_length=1)
    author: str = Field(min_length=1, max_length=200)


class AssignIn(BaseModel):
    owner: str | None = None


class StatusIn(BaseModel):
    note: str | None = Field(default=None, max_length=2000)


def _guarded(request: Request, fn: Any, *args: Any, **kwargs: Any) -> Any:
    if not _authorised(request):
        if not _keys(request):
            return _error(401, "unauthorized", f"no API keys are configured on this server; set {ENV_KEYS} or api_keys in freshcontext.yaml")
        return _error(401, "unauthorized", "missing or invalid API key: send X-API-Key or Authorization: Bearer <key>")
    try:
        return fn(*args, **kwargs)
    except FreshContextError as exc:
        return _error_for(exc)
    except IntegrityError:
        return _error(409, "already_answered", "the question was answered concurrently")


@router.get("/v1/questions", tags=["staff"], summary="List routed questions (oldest first)")
def questions_list(request: Request, status: str | None = "open", limit: int = 100, offset: int = 0) -> Any:
    return _guarded(request, lambda: {"questions": list_questions(_store(request), status=None if status == "all" else status, limit=limit, offset=offset)})


@router.get("/v1/questions/{question_id}", tags=["staff"], summary="A routed question with its working memory, asks and answer")
def question_get(request: Request, question_id: str) -> Any:
    return _guarded(request, get_question, _store(request), question_id)


@router.post("/v1/questions/{question_id}/answer", tags=["staff"], summary="Answer a routed question (same stored path as the webhook)")
def question_answer(request: Request, question_id: str, body: AnswerIn, background: BackgroundTasks) -> Any:
    return _guarded(request, _accept_answer, request, background, question_id, body.author, body.answer, "api")


@router.post("/v1/questions/{question_id}/assign", tags=["staff"], summary="Set or clear the owner of an open question")
def question_assign(request: Request, question_id: str, body: AssignIn) -> Any:
    return _guarded(request, assign_question, _store(request), question_id, body.owner)


@router.post("/v1/questions/{question_id}/close", tags=["staff"], summary="Close an answered question")
def question_close(request: Request, question_id: str, body: StatusIn) -> Any:
    return _guarded(request, set_status, _store(request), question_id, "closed", note=body.note)


@router.post("/v1/questions/{question_id}/dismiss", tags=["staff"], summary="Dismiss an open question without an answer")
def question_dismiss(request: Request, question_id: str, body: StatusIn) -> Any:
    return _guarded(request, set_status, _store(request), question_id, "dismissed", note=body.note)


@router.get("/v1/learning", tags=["staff"], summary="Learning-loop metrics: time to knowledge, reuse, escalation rate, queue ages")
def learning(request: Request) -> Any:
    return _guarded(request, lambda: {**learning_metrics(_store(request)), "outbox": outbox_counts(_store(request))})


# --- the /staff queue page ---------------------------------------------------------------

_CSS = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:.8rem 1.5rem;display:flex;justify-content:space-between;align-items:center}
main{max-width:980px;margin:1.2rem auto;padding:0 1rem}
.q{background:#fff;border:1px solid #d9dde5;border-radius:8px;padding:1rem 1.2rem;margin:0 0 1.2rem}
.q h2{font-size:1.1rem;margin:.1rem 0 .4rem}.meta{color:#5b6475;font-size:.85rem}
.reason{display:inline-block;background:#fde8e8;color:#8a1c1c;border-radius:4px;padding:0 .4rem;margin:.15rem .3rem .15rem 0;font-size:.8rem}
details{margin:.5rem 0}summary{cursor:pointer;font-weight:600}
.ctx{border-left:3px solid #c7cdd8;padding:.2rem .6rem;margin:.4rem 0;font-size:.9rem;white-space:pre-wrap}
textarea{width:100%;min-height:6rem;font:inherit}input[type=text],input[type=password]{font:inherit;padding:.2rem .4rem}
button{font:inherit;padding:.3rem .9rem;border-radius:5px;border:1px solid #2b5bd7;background:#2b5bd7;color:#fff;cursor:pointer}
button.secondary{background:#fff;color:#2b5bd7}.flash{background:#e6f4ea;border:1px solid #9fd3ae;padding:.5rem 1rem;border-radius:6px}
.warn{background:#fff4d6;border:1px solid #e8c767;padding:.5rem 1rem;border-radius:6px}
"""


def _page(title: str, body: str) -> HTMLResponse:
    return HTMLResponse(
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
        f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{_CSS}</style></head>"
        f"<body><header><strong>freshcontext · staff queue</strong><span>{html.escape(title)}</span></header><main>{body}</main></body></html>"
    )


def _csrf(request: Request) -> str:
    # Tied to the session cookie (or to nothing on an unprotected install); checked on every form post.
    seed = request.cookies.get(SESSION_COOKIE) or _presented_key(request) or "none"
    return hmac.new(seed.encode(), b"freshcontext-staff-csrf", hashlib.sha256).hexdigest()[:32]


def _render_question(q: dict[str, Any], csrf: str) -> str:
    e = html.escape
    qid = e(q["question_id"])
    reasons = "".join(f"<span class=reason title='{e(r.get('detail', ''))}'>{e(r.get('code', '?'))}</span>" for r in q["reasons"])
    asks = "".join(
        f"<li>{e(a['text'])} <span class=meta>— user {e(str(a['user_id'] or 'anonymous'))}"
        f"{' · snapshot ' + e(a['user_version_id']) if a['user_version_id'] else ''}"
        f"{' · conversation ' + e(a['conversation_id']) if a['conversation_id'] else ''} · {e(a['asked_at'] or '')}</span></li>"
        for a in q["asks"]
    )
    context = "".join(
        f"<div class=ctx><strong>{e(c['title'])}</strong> <span class=meta>{e(c['doc_id'])} @ {e(c['version_id'])} · score {c['score']}</span>\n{e(c['text'][:700])}</div>"
        for c in q["context"]
    ) or "<p class=meta>No company context matched.</p>"
    facts = "".join(f"<li>{e(f['text'])}</li>" for f in q["user_state"]) or "<li class=meta>no user state</li>"
    details = "".join(f"<li>{e(r.get('detail', ''))}</li>" for r in q["reasons"])
    return f"""
<section class=q id="q-{qid}" data-question-id="{qid}">
  <h2>{e(q['text'])}</h2>
  <div class=meta>{qid} · opened {e(q['created_at'] or '')} · asked {q['ask_count']}×{' · owner ' + e(q['owner']) if q['owner'] else ''}
  {' · confidence ' + format(q['confidence'], '.2f') if q['confidence'] is not None else ''}</div>
  <div>{reasons}</div>
  <details open><summary>Why it was routed</summary><ul>{details}</ul></details>
  <details open><summary>Who asked</summary><ul>{asks}</ul></details>
  <details><summary>User state at the time</summary><ul>{facts}</ul></details>
  <details><summary>Context the system had ({len(q['context'])} passages)</summary>{context}</details>
  <form method=post action="/staff/questions/{qid}/answer" class=answer>
    <input type=hidden name=csrf value="{csrf}">
    <label>Your answer<textarea name=answer required></textarea></label>
    <label>Your name <input type=text name=author required></label>
    <button type=submit>Send answer</button>
  </form>
  <form method=post action="/staff/questions/{qid}/dismiss" style="margin-top:.5rem">
    <input type=hidden name=csrf value="{csrf}"><button class=secondary type=submit>Dismiss</button>
  </form>
</section>"""


@router.get("/staff", response_class=HTMLResponse, include_in_schema=False)
def staff_page(request: Request, answered: str | None = None, error: str | None = None) -> Response:
    if not _authorised(request):
        return RedirectResponse("/staff/login", status_code=303)
    store = _store(request)
    questions = list_questions(store, status="open", limit=200)
    parts = []
    if answered:
        parts.append(f"<p class=flash role=status>Answer to {html.escape(answered)} stored; it becomes knowledge as soon as it is indexed.</p>")
    if error:
        parts.append(f"<p class=warn role=alert>{html.escape(error)}</p>")
    parts.append(f"<p class=meta id=count>{len(questions)} open question(s), oldest first.</p>")
    csrf = _csrf(request)
    parts.extend(_render_question(q, csrf) for q in questions)
    return _page(f"{len(questions)} open", "".join(parts))


@router.get("/staff/login", response_class=HTMLResponse, include_in_schema=False)
def staff_login_form(request: Request, failed: int = 0) -> HTMLResponse:
    msg = "<p class=warn role=alert>That key is not valid.</p>" if failed else ""
    if not _keys(request):
        msg += f"<p class=warn role=alert>No API keys are configured on this server: set <code>{ENV_KEYS}</code> or <code>api_keys</code> in freshcontext.yaml.</p>"
    return _page("sign in", f"""{msg}<form method=post action=/staff/login class=q>
<label>API key <input type=password name=api_key required autofocus></label> <button type=submit>Sign in</button></form>""")


@router.post("/staff/login", include_in_schema=False)
def staff_login(request: Request, api_key: str = Form(...)) -> Response:
    keys = _keys(request)
    if not any(hmac.compare_digest(api_key, k) for k in keys):
        return RedirectResponse("/staff/login?failed=1", status_code=303)
    response = RedirectResponse("/staff", status_code=303)
    response.set_cookie(SESSION_COOKIE, _session_token(api_key), httponly=True, samesite="strict", max_age=12 * 3600)
    return response


def _form_guard(request: Request, csrf: str) -> Response | None:
    if not _authorised(request):
        return RedirectResponse("/staff/login", status_code=303)
    if not hmac.compare_digest(csrf, _csrf(request)):
        return _error(403, "bad_csrf_token", "the form is stale or was not served by this page; reload /staff")
    return None


@router.post("/staff/questions/{question_id}/answer", include_in_schema=False)
def staff_answer_form(
    request: Request, question_id: str, background: BackgroundTasks,
    answer: str = Form(...), author: str = Form(...), csrf: str = Form(""),
) -> Response:
    blocked = _form_guard(request, csrf)
    if blocked is not None:
        return blocked
    try:
        _accept_answer(request, background, question_id, author, answer, "staff_page")
    except FreshContextError as exc:
        return RedirectResponse(f"/staff?error={_quote(str(exc))}", status_code=303)
    except IntegrityError:
        return RedirectResponse(f"/staff?error={_quote('that question was answered at the same time by someone else')}", status_code=303)
    return RedirectResponse(f"/staff?answered={_quote(question_id)}", status_code=303)


@router.post("/staff/questions/{question_id}/dismiss", include_in_schema=False)
def staff_dismiss_form(request: Request, question_id: str, csrf: str = Form("")) -> Response:
    blocked = _form_guard(request, csrf)
    if blocked is not None:
        return blocked
    try:
        set_status(_store(request), question_id, "dismissed", note="dismissed on the staff page")
    except FreshContextError as exc:
        return RedirectResponse(f"/staff?error={_quote(str(exc))}", status_code=303)
    return RedirectResponse("/staff", status_code=303)


def _quote(text: str) -> str:
    from urllib.parse import quote

    return quote(text[:300], safe="")
