"""``/staff``: a server-rendered queue page where staff read a routed question's working memory and answer it.

Rendered from Jinja2 templates (``service/templates``) with autoescape on, so customer
text with markup is shown, never rendered. Forms carry a CSRF token tied to the session.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from context_store.errors import FreshContextError
from context_store.route import list_questions, set_status
from service.answers import WAIT_DEFAULT_S, accept_answer, await_retrievable
from service.auth import ENV_KEYS, presented_key
from service.deps import SESSION_COOKIE, StoreDep, keyring, staff_signed_in
from service.errors import ApiError, error_response

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
    # Tied to the session cookie (or to nothing on an unprotected install); checked on every form post.
    seed = request.cookies.get(SESSION_COOKIE) or presented_key(request) or "none"
    return hmac.new(seed.encode("utf-8", "surrogatepass"), b"freshcontext-staff-csrf", hashlib.sha256).hexdigest()[:32]


def _render(request: Request, name: str, **context: object) -> HTMLResponse:
    return _TEMPLATES.TemplateResponse(request, name, context)


@router.get("/staff", response_class=HTMLResponse)
def staff_page(
    request: Request, store: StoreDep, answered: str | None = None, retrievable: str | None = None, error: str | None = None
) -> Response:
    if staff_signed_in(request) is None:
        return RedirectResponse("/staff/login", status_code=303)
    questions = list_questions(store, status="open", limit=200)
    return _render(request, "staff_queue.html", title=f"{len(questions)} open", questions=questions, csrf=_csrf(request),
                   answered=answered, retrievable=retrievable == "1", error=error)


@router.get("/staff/login", response_class=HTMLResponse)
def staff_login_form(request: Request, failed: int = 0) -> HTMLResponse:
    return _render(request, "staff_login.html", title="sign in", failed=bool(failed), keys_configured=bool(len(keyring(request))),
                   env_keys=ENV_KEYS)


@router.post("/staff/login")
def staff_login(request: Request, api_key: str = Form(...)) -> Response:
    ring = keyring(request)
    if not ring.matches(api_key):
        return RedirectResponse("/staff/login?failed=1", status_code=303)
    response = RedirectResponse("/staff", status_code=303)
    response.set_cookie(SESSION_COOKIE, ring.session_token(api_key), httponly=True, samesite="strict", max_age=12 * 3600)
    return response


def _form_guard(request: Request, csrf: str) -> Response | None:
    if staff_signed_in(request) is None:
        return RedirectResponse("/staff/login", status_code=303)
    if not hmac.compare_digest(csrf.encode("utf-8", "surrogatepass"), _csrf(request).encode()):
        return error_response(ApiError(403, "bad_csrf_token", "the form is stale or was not served by this page; reload /staff"))
    return None


def _back(**query: str) -> RedirectResponse:
    suffix = "&".join(f"{k}={quote(v)}" for k, v in query.items())
    return RedirectResponse(f"/staff?{suffix}" if suffix else "/staff", status_code=303)


@router.post("/staff/questions/{question_id}/answer")
def staff_answer_form(
    request: Request, question_id: str,
    answer: str = Form(...), author: str = Form(...), csrf: str = Form(""),
) -> Response:
    blocked = _form_guard(request, csrf)
    if blocked is not None:
        return blocked
    try:
        result = accept_answer(request, None, question_id, author, answer, "staff_page")
    except FreshContextError as exc:
        return _back(error=str(exc))
    # the person answering sees whether the next asker gets it now (bounded; indexing goes on after)
    status, _ = await_retrievable(request, result, WAIT_DEFAULT_S)
    return _back(answered=question_id, retrievable="1" if status == 200 else "0")


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
