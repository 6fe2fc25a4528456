"""What the console holds for one gateway: sessions, templates, and the response's armour."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from govern.console.access import MatrixCache
from govern.console.pages import Viewer
from govern.console.session import COOKIE, PRE_COOKIE, Session, Sessions
from govern.deliver.gateway import Gateway
from govern.deliver.lifecycle import Bearer, Exchange
from govern.errors import GovernError

__all__ = ["CSP", "Console"]

# No inline script or style, nothing from another origin, no framing, forms post only here.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-store",
           "Cross-Origin-Opener-Policy": "same-origin"}
NAV = (("catalog", "Catalog"), ("access", "Effective access"), ("dry-run", "Policy dry run"),
       ("audit", "Audit"), ("budgets", "Budgets"), ("fleet", "Fleet"), ("monitoring", "Monitoring"))


class Console:
    def __init__(self, gateway: Gateway, *, sessions: Sessions | None = None) -> None:
        self.gateway = gateway
        self.sessions = sessions or Sessions()
        self.started = datetime.now(UTC)
        self.matrices = MatrixCache()
        self.env = Environment(loader=PackageLoader("govern.console", "templates"),
                               autoescape=select_autoescape(default=True, default_for_string=True),
                               undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)

    # -- who is asking ---------------------------------------------------------------------------
    def enter(self, request: Request, ex: Exchange) -> tuple[Viewer, Session | None]:
        """Authenticate (the session's credential, or a bearer header), declare the purpose
        (the session's, or X-Purpose / ``purpose``), and find what the caller administers
        (nothing: refused). Runs the lifecycle's steps, in its order."""
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is not None:
            ex.authenticate(Bearer(session.credential))
            ex.declare(session.purpose)
        else:
            ex.authenticate(Bearer(request.headers.get("authorization")))
            ex.declare(request.headers.get("x-purpose"), request.query_params.get("purpose"))
        administered = tuple(ex.permitted("administer"))
        assert ex.principal is not None and ex.purpose is not None
        return Viewer(self.gateway, ex, ex.principal, ex.purpose, administered, self.started,
                      self.matrices), session

    @staticmethod
    def csrf_ok(session: Session, value: str | None) -> bool:
        return Sessions.csrf_ok(session, value)

    # -- responses ---------------------------------------------------------------------------------
    def render(self, template: str, viewer: Viewer | None, session: Session | None, data: dict[str, Any]) -> str:
        page = self.env.get_template(template)
        return page.render(viewer=viewer, csrf=session.csrf if session else "", nav=NAV,
                           signed_in=session is not None, **data)

    @staticmethod
    def secured(response: Response) -> Response:
        response.headers.update(HEADERS)
        return response

    def html(self, body: str, status: int = 200) -> Response:
        return self.secured(HTMLResponse(body, status_code=status))

    @staticmethod
    def set_cookie(request: Request, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(name, value, max_age=max_age, path="/console", httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")

    def refusal(self, request: Request, exc: GovernError) -> Response:
        """The error as a page: 401 is the sign-in form (with a fresh double-submit token)."""
        if exc.status == 401:
            form_token, cookie = self.sessions.signin_token()
            had_session = COOKIE in request.cookies
            body = self.render("signin.html", None, None, {"form_token": form_token, "error": exc.detail
                               if had_session or request.method == "POST" else None})
            response = self.html(body, 401)
            self.set_cookie(request, response, PRE_COOKIE, cookie, 1800)
            if had_session:
                response.delete_cookie(COOKIE, path="/console")
            return response
        body = self.render("error.html", None, None, {"status": exc.status, "title": exc.title, "detail": exc.detail})
        return self.html(body, exc.status)
