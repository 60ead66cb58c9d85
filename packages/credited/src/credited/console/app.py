"""`credited console`: server-rendered pages for support staff on top of payments' support API.

The person's API key is kept in an HttpOnly, SameSite=Strict cookie and sent to payments as their bearer key,
so payments records every action under the key's name. Forms post back to the console only: a POST whose
Origin (or, lacking one, Referer) is not the console itself is refused before anything is sent on. Refusals
from payments (401, 403, 404, 409, ...) are shown on the page with their code and detail, never a trace.
"""

import logging
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException as StarletteHTTPException

from credited.console.api import ACTIONS, CASE_ACTIONS, SEARCH_FILTERS, ApiRefused, ApiUnreachable, SupportApi
from credited.console.i18n import LANGUAGE_NAMES, LOCALES, Words, choose_locale
from credited.console.ordering import sort_cases, sort_timeline

log = logging.getLogger(__name__)

KEY_COOKIE = "credited_console_key"
LANG_COOKIE = "credited_console_lang"
TEMPLATES = Path(__file__).parent / "templates"


_MINOR_UNITS = re.compile(r"[0-9]{1,13}")
"""A compensation's amount as a person types it: up to 13 digits (the contracts' MinorUnits stop at 10**12)."""

MAX_KEY_LENGTH = 256
"""Far beyond an API key (about 50 characters), far below what a cookie or a header can hold."""
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/-]+=*")
"""What an `Authorization: Bearer` header can carry (RFC 6750's b64token): no space, control or non-ASCII character."""


def key_problem(key: str) -> str | None:
    """Why `key` cannot be an API key, as the word that says so, or None when it may be one (payments decides).

    A key with a line break, a tab or a NUL cannot even be put in the header (the request fails before it leaves,
    which would read as payments unreachable); one with a space or "…" (a pasted `credited keys list` prefix) is no
    key either. None of them is sent to payments."""
    if not key:
        return "key_empty"
    if len(key) > MAX_KEY_LENGTH:
        return "key_too_long"
    if not _BEARER_TOKEN.fullmatch(key):
        return "key_malformed"
    return None


class Refused(Exception):
    """A request the console itself refuses (no key, a cross-site form, a bad amount): status and word key."""

    def __init__(self, status: int, word: str) -> None:
        self.status, self.word = status, word


def local_path(target: str | None, default: str = "/search") -> str:
    """`target` when it is a path on the console itself, else `default` (never an open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


def same_origin(request: Request) -> bool:
    """Whether a POST came from a page of the console: its Origin, else its Referer, names the console's host."""
    claimed = request.headers.get("origin") or request.headers.get("referer")
    if not claimed or claimed == "null":
        return False
    parts = urlsplit(claimed)
    return f"{parts.scheme}://{parts.netloc}" == f"{request.url.scheme}://{request.url.netloc}"


SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "X-Content-Type-Options": "nosniff",
    # The console runs no script at all: a policy that allows none is free, and a second line behind the templates'
    # escaping. Its forms post only to itself; no other site frames it.
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
}
CONFIRMATIONS = frozenset({"action_recorded", "case_updated"})
"""The words the console's confirmation box may show after its own redirects: `?done=` is in a link anyone can
write, and any other value showed that sentence to support staff as the console's own ("Refund approved: wire...")."""


def with_security_headers(response: Response) -> Response:
    """`response` with the console's security headers (those it set itself kept): every page, refusals and
    failures included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def _confirmation(request: Request) -> str | None:
    done = request.query_params.get("done")
    return done if done in CONFIRMATIONS else None


def build_app(payments_url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> FastAPI:
    """The console, calling payments at `payments_url` (through `transport` in unit tests)."""
    app = FastAPI(title="credited console", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(TEMPLATES))

    def words(request: Request) -> Words:
        return Words(choose_locale(request.cookies.get(LANG_COOKIE), request.headers.get("accept-language")))

    def page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        t = words(request)
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        base = {
            "t": t,
            "locale": t.locale,
            "languages": [(code, LANGUAGE_NAMES[code]) for code in LOCALES],
            "here": quote(here, safe="/?=&"),
            "signed_in": bool(request.cookies.get(KEY_COOKIE)),
        }
        return templates.TemplateResponse(request, name, {**base, **context}, status_code=status)

    def api(request: Request) -> SupportApi:
        key = request.cookies.get(KEY_COOKIE)
        if not key:
            raise Refused(401, "signin_required")
        return SupportApi(payments_url, key, transport=transport)

    def problem(request: Request, exc: Exception) -> dict[str, Any]:
        """What the page says about a refusal: the status, the API's code and detail, and a sentence."""
        t = words(request)
        if isinstance(exc, ApiRefused):
            known = exc.status in (400, 401, 403, 404, 409, 422)
            message = t(f"error_{exc.status}" if known else "error_other")
            return {"status": exc.status, "code": exc.code, "detail": exc.detail, "message": message}
        if isinstance(exc, ApiUnreachable):
            return {"status": 502, "code": "unreachable", "detail": str(exc), "message": t("unreachable")}
        assert isinstance(exc, Refused)
        return {"status": exc.status, "code": exc.word, "detail": "", "message": t(exc.word)}

    async def guarded(request: Request, render: Callable[[], Awaitable[Response]], template: str) -> Response:
        try:
            return await render()
        except (ApiRefused, ApiUnreachable, Refused) as exc:
            error = problem(request, exc)
            return page(request, template, status=error["status"], error=error)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        error = {"status": exc.status_code, "code": "http_error", "detail": str(exc.detail), "message": ""}
        return page(request, "error.html", status=exc.status_code, error=error)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        log.error("console request %s %s failed", request.method, request.url.path, exc_info=exc)
        error = {"status": 500, "code": "internal_error", "detail": "the console failed; it is logged", "message": ""}
        return with_security_headers(
            page(request, "error.html", status=500, error=error)
        )  # outside the middleware below

    @app.middleware("http")
    async def _no_key_cookie_that_cannot_be_a_key(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """A key cookie the console never set (edited by hand) is cleared, and the sign-in page says so: it is never
        sent to payments, and one no header can carry would fail the page with a 500. Signing in, out and choosing a
        language go on as usual. (Registered first: it runs inside the origin check, and its page gets the headers.)"""
        key = request.cookies.get(KEY_COOKIE)
        path = request.url.path
        going_on = (request.method == "POST" and path in ("/signin", "/signout")) or path.startswith("/lang/")
        if not key or going_on or key_problem(key) is None:
            return await call_next(request)
        error = problem(request, Refused(401, "key_cookie_unreadable"))
        response = page(request, "signin.html", status=401, error=error, signed_in=False)
        response.delete_cookie(KEY_COOKIE, httponly=True, samesite="strict")
        return response

    @app.middleware("http")
    async def _forms_from_the_console_only(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.method == "POST" and not same_origin(request):
            error = problem(request, Refused(403, "bad_origin"))
            return with_security_headers(page(request, "error.html", status=403, error=error))
        return with_security_headers(await call_next(request))

    @app.get("/", include_in_schema=False)
    async def home(request: Request) -> Response:
        return RedirectResponse("/search" if request.cookies.get(KEY_COOKIE) else "/signin", status_code=303)

    @app.get("/lang/{code}")
    async def language(code: str, next: str | None = None) -> Response:
        response = RedirectResponse(local_path(next), status_code=303)
        if code in LOCALES:
            response.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, samesite="strict")
        return response

    @app.get("/signin")
    async def signin_form(request: Request) -> Response:
        return page(request, "signin.html")

    @app.post("/signin")
    async def signin(request: Request, key: str = Form("")) -> Response:
        pasted = key.strip()  # a key copied with the line break or blanks around it

        async def check() -> Response:
            wrong = key_problem(pasted)  # an empty form is asked again on this page, not answered with a 422 in JSON
            if wrong is not None:
                raise Refused(401, wrong)
            async with SupportApi(payments_url, pasted, transport=transport) as client:
                await client.cases()  # a key payments refuses is told here, not on the next page
            response = RedirectResponse("/search", status_code=303)
            response.set_cookie(
                KEY_COOKIE, pasted, httponly=True, samesite="strict", secure=request.url.scheme == "https"
            )
            return response

        return await guarded(request, check, "signin.html")

    @app.post("/signout")
    async def signout() -> Response:
        response = RedirectResponse("/signin", status_code=303)
        response.delete_cookie(KEY_COOKIE, httponly=True, samesite="strict")
        return response

    @app.get("/search")
    async def search(request: Request, by: str = "order_id", q: str = "") -> Response:
        by = by if by in SEARCH_FILTERS else "order_id"

        async def render() -> Response:
            orders = None
            async with api(request) as client:
                if q.strip():
                    orders = await client.search(by, q.strip())
            return page(request, "search.html", by=by, q=q, orders=orders, filters=SEARCH_FILTERS)

        return await guarded(request, render, "search.html")

    async def order_page(
        request: Request, order_id: str, error: dict[str, Any] | None = None, idempotency_key: str | None = None
    ) -> Response:
        async with api(request) as client:
            view = await client.order(order_id)
            can_act = await client.can_act()
            cases = sort_cases(view.get("cases", []))
            for case in cases:  # a case's history (who acknowledged, noted, resolved) is on its own endpoint
                case["history"] = (await client.case(str(case["id"]))).get("history", [])
        return page(
            request,
            "order.html",
            status=error["status"] if error else 200,
            order_id=order_id,
            order=view.get("order", {}),
            timeline=sort_timeline(view.get("timeline", [])),
            cases=cases,
            actions=view.get("actions", []),
            unavailable=view.get("unavailable", []),
            action_names=ACTIONS,
            can_act=can_act,
            error=error,
            done=_confirmation(request),
            idempotency_key=idempotency_key or uuid.uuid4().hex,
        )

    @app.get("/orders/{order_id}")
    async def order(request: Request, order_id: str) -> Response:
        return await guarded(request, lambda: order_page(request, order_id), "order.html")

    @app.post("/orders/{order_id}/actions")
    async def act(
        request: Request,
        order_id: str,
        action: str = Form(...),
        reason: str = Form(""),
        amount: str = Form(""),
        idempotency_key: str = Form(""),
    ) -> Response:
        async def send() -> Response:
            minor: int | None = None
            if action == "grant_compensation":
                # ASCII digits only: str.isdigit() also says yes to "²", which int() cannot read.
                if not _MINOR_UNITS.fullmatch(amount.strip()) or int(amount) <= 0:
                    raise Refused(422, "bad_amount")
                minor = int(amount)
            async with api(request) as client:
                await client.act(order_id, action, reason.strip(), minor, idempotency_key or None)
            return RedirectResponse(f"/orders/{quote(order_id)}?done=action_recorded", status_code=303)

        # Each form's key is the page's key and its action (order.html): the page's is kept if the outcome is unknown.
        return await act_or_show(request, order_id, send, sent_key=idempotency_key.removesuffix(f"-{action}"))

    @app.get("/cases")
    async def cases(request: Request) -> Response:
        async def render() -> Response:
            async with api(request) as client:
                found = await client.cases("open")
                can_act = await client.can_act()
            return page(request, "cases.html", cases=sort_cases(found), can_act=can_act, done=_confirmation(request))

        return await guarded(request, render, "cases.html")

    @app.post("/cases/{case_id}/{action}")
    async def case_action(
        request: Request, case_id: str, action: str, text: str = Form(""), next: str = Form("/cases")
    ) -> Response:
        back = local_path(next, "/cases")
        if action not in CASE_ACTIONS:
            raise StarletteHTTPException(404, f"no case action {action!r}")

        async def send() -> Response:
            async with api(request) as client:
                await client.case_action(case_id, action, text.strip() or None)
            joiner = "&" if "?" in back else "?"
            return RedirectResponse(f"{back}{joiner}done=case_updated", status_code=303)

        order_id = back.removeprefix("/orders/").split("?")[0] if back.startswith("/orders/") else None
        if order_id:
            return await act_or_show(request, order_id, send)
        return await guarded(request, send, "error.html")

    async def act_or_show(
        request: Request, order_id: str, send: Callable[[], Awaitable[Response]], sent_key: str | None = None
    ) -> Response:
        """Do it and go back to the order; when refused, show the order again with the refusal on top. When the act's
        outcome is unknown (payments unreachable, or its answer lost or a 5xx: it may have been done), the page keeps
        the key the act went with, so sending the form again is the same act, which payments does once: with a new
        key, a compensation sent again after a lost answer was granted twice."""
        kept: str | None = None
        try:
            return await send()
        except (ApiRefused, ApiUnreachable, Refused) as exc:
            error = problem(request, exc)
            unknown = isinstance(exc, ApiUnreachable) or (isinstance(exc, ApiRefused) and exc.status >= 500)
            kept = sent_key if unknown and sent_key else None
        return await guarded(request, lambda: order_page(request, order_id, error, kept), "order.html")

    return app
