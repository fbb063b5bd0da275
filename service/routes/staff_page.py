"""``/staff``: a server-rendered queue page where staff read a routed question's working memory and answer it.

Rendered from Jinja2 templates (``service/templates``) with autoescape on, so customer
text with markup is shown, never rendered. Signing in with a staff or admin key opens a
server-side session (a random id in an HttpOnly, SameSite=Strict cookie, ``Secure`` on
HTTPS) that expires after ``service.session_hours`` and ends at sign-out; failed sign-ins
are limited per client address (429). Forms carry a CSRF token derived from the session id.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, BackgroundTasks, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError

from context_store.errors import FreshContextError
from context_store.learn import answers_for_review, approve_answer, retire_answer
from context_store.route import list_questions, set_status
from context_store.store import close_staff_session, open_staff_session
from service.answers import WAIT_DEFAULT_S, AnswerIn, accept_answer, await_retrievable, index_later
from service.auth import ENV_KEYS, digest
from service.deps import StoreDep, caller, keyring
from service.errors import ApiError, error_response
from service.sessions import SESSION_COOKIE, STAFF_ROLES, LoginLimiter

__all__ = ["router"]

router = APIRouter(include_in_schema=False)
_TEMPLATES = Jinja2Templates(
    env=jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).resolve().parents[1] / "templates"),
        autoescape=True,  # every template: customer text is data, never markup
        undefined=jinja2.StrictUndefined,
    )
)


def _csrf(request: Request) -> str:
    # Derived from the session id (secret, random, in an HttpOnly cookie); checked on every form post.
    seed = request.cookies.get(SESSION_COOKIE) or "none"
    return hmac.new(digest(seed), b"freshcontext-staff-csrf", hashlib.sha256).hexdigest()[:32]


def _render(request: Request, name: str, **context: object) -> HTMLResponse:
    return _TEMPLATES.TemplateResponse(request, name, context)


def _signed_in(request: Request) -> bool:
    who = caller(request)
    return who is not None and who.via == "session" and who.role in STAFF_ROLES


@router.get("/staff", response_class=HTMLResponse)
def staff_page(
    request: Request, store: StoreDep, answered: str | None = None, retrievable: str | None = None, reviewed: str | None = None,
    error: str | None = None,
) -> Response:
    if not _signed_in(request):
        return RedirectResponse("/staff/login", status_code=303)
    questions = list_questions(store, status="open", limit=200)
    return _render(request, "staff_queue.html", title=f"{len(questions)} open", questions=questions, csrf=_csrf(request),
                   answered=answered, retrievable=retrievable == "1", reviewed=reviewed, error=error, who=caller(request), review=answers_for_review(store))


@router.get("/staff/login", response_class=HTMLResponse)
def staff_login_form(request: Request, failed: int = 0) -> HTMLResponse:
    return _render(request, "staff_login.html", title="sign in", failed=bool(failed), keys_configured=bool(len(keyring(request))),
                   env_keys=ENV_KEYS, who=None)


def _limiter(request: Request) -> LoginLimiter:
    limiter = getattr(request.app.state, "login_limiter", None)
    if limiter is None:
        config = request.app.state.store.settings.service
        limiter = request.app.state.login_limiter = LoginLimiter(config.login_attempts, config.login_window_seconds)
    return limiter


@router.post("/staff/login")
def staff_login(request: Request, store: StoreDep, api_key: str = Form(...)) -> Response:
    client = request.client.host if request.client else "unknown"
    limiter = _limiter(request)
    wait = limiter.retry_after(client)
    if wait is not None:
        return error_response(ApiError(429, "too_many_requests", f"too many failed sign-ins from {client}; try again in {wait:.0f} s",
                                       {"Retry-After": str(int(wait) + 1)}))
    who = keyring(request).resolve(api_key)
    if who is None or who.role not in STAFF_ROLES:
        limiter.failed(client)
        return RedirectResponse("/staff/login?failed=1", status_code=303)  # an agent key is refused like a wrong one
    limiter.succeeded(client)
    hours = store.settings.service.session_hours
    session_id = open_staff_session(store, who.name, who.role, hours=hours, client=client)
    response = RedirectResponse("/staff", status_code=303)
    response.set_cookie(SESSION_COOKIE, session_id, httponly=True, samesite="strict", max_age=max(1, round(hours * 3600)),
                        secure=request.url.scheme == "https")
    return response


def _form_guard(request: Request, csrf: str) -> Response | None:
    if not _signed_in(request):
        return RedirectResponse("/staff/login", status_code=303)
    if not hmac.compare_digest(digest(csrf), digest(_csrf(request))):
        return error_response(ApiError(403, "bad_csrf_token", "the form is stale or was not served by this page; reload /staff"))
    return None


@router.post("/staff/logout")
def staff_logout(request: Request, store: StoreDep, csrf: str = Form("")) -> Response:
    blocked = _form_guard(request, csrf)
    if blocked is not None:
        return blocked
    close_staff_session(store, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/staff/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


def _back(**query: str) -> RedirectResponse:
    suffix = "&".join(f"{k}={quote(v)}" for k, v in query.items())
    return RedirectResponse(f"/staff?{suffix}" if suffix else "/staff", status_code=303)


@router.post("/staff/questions/{question_id}/answer")
def staff_answer_form(
    request: Request, question_id: str,
    answer: str = Form(...), author: str = Form(...), csrf: str = Form(""),
    question: str = Form(""), paraphrases: str = Form(""), scope: str = Form("global"),
) -> Response:
    blocked = _form_guard(request, csrf)
    if blocked is not None:
        return blocked
    try:
        body = AnswerIn(answer=answer, author=author, question=question.strip() or None, scope=scope,  # type: ignore[arg-type]
                        paraphrases=[line for line in paraphrases.splitlines() if line.strip()])
        result = accept_answer(request, None, question_id, body, "staff_page")
    except ValidationError as exc:
        return _back(error="; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))
    except FreshContextError as exc:
        return _back(error=str(exc))
    # the person answering sees whether the next asker gets it now (bounded; indexing goes on after)
    status, _ = await_retrievable(request, result, WAIT_DEFAULT_S)
    return _back(answered=question_id, retrievable="1" if status == 200 else "0")


@router.post("/staff/answers/{answer_id}/{decision}")
def staff_review_form(
    request: Request, answer_id: str, decision: str, store: StoreDep, background: BackgroundTasks,
    author: str = Form(...), csrf: str = Form(""), note: str = Form(""),
) -> Response:
    blocked = _form_guard(request, csrf)
    if blocked is not None:
        return blocked
    if decision not in ("approve", "retire"):
        return _back(error=f"unknown decision {decision!r}: approve or retire")
    try:
        if decision == "approve":
            _, path = approve_answer(store, answer_id, reviewer=author)
        else:
            _, path = retire_answer(store, answer_id, reviewer=author, note=note or None)
        index_later(request, background, answer_id, path)
    except FreshContextError as exc:
        return _back(error=str(exc))
    return _back(reviewed=answer_id)


@router.post("/staff/questions/{question_id}/dismiss")
def staff_dismiss_form(request: Request, question_id: str, store: StoreDep, csrf: str = Form("")) -> Response:
    blocked = _form_guard(request, csrf)
    if blocked is not None:
        return blocked
    try:
        set_status(store, question_id, "dismissed", note="dismissed on the staff page")
    except FreshContextError as exc:
        return _back(error=str(exc))
    return _back()
