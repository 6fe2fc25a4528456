"""The console's HTTP routes: sign in, the pages, the actions. Parse, call, render.

Every route walks the request's exchange (the one lifecycle, :mod:`govern.deliver.lifecycle`),
so each page view and each action leaves exactly one audit record: authenticate (the session's
credential, re-checked on every request, or a bearer header) → the session's purpose → the
datasets the caller may ``administer`` (none: refused) → the page → ``finish()`` before the
response leaves. A refusal renders an HTML page with the error's status (401: the sign-in form).

Forms are read only after authentication (the sign-in form, whose body *is* the credential, is
the one exception, bounded to 4 KiB), and every POST made with a session carries the session's
CSRF token. Responses carry a strict Content-Security-Policy: scripts and styles only from the
console's own vendored files, no inline code, no framing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, quote

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from govern.console import pages
from govern.console.assets import ASSETS
from govern.console.service import Console
from govern.console.session import COOKIE, PRE_COOKIE, Session
from govern.deliver.lifecycle import Bearer, Exchange
from govern.errors import (
    AccessDenied,
    GovernError,
    InvalidRequest,
    NotFound,
)
from govern.monitor.catalog_patch import catalog_change
from govern.monitor.run import profile_dataset
from govern.monitor.store import ProfileStore
from govern.policy.load import load_policy
from govern.server.exchange import governed, read_body

__all__ = ["router"]

router = APIRouter(prefix="/console", include_in_schema=False)

FORM_LIMIT = 16 * 1024
SIGNIN_LIMIT = 4 * 1024


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


async def _read_form(ex: Exchange, request: Request, limit: int, *, credential: bool = False) -> dict[str, str]:
    """A urlencoded body (first value of each field), refused with 413 past ``limit`` bytes."""
    raw = await read_body(ex, request, limit, credential=credential)
    try:
        fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=50)
    except (UnicodeDecodeError, ValueError):
        raise InvalidRequest("the form is not valid") from None
    return {k: v[0] for k, v in fields.items() if v}


def _authenticated_form(ex: Exchange, request: Request) -> Any:
    return _read_form(ex, request, FORM_LIMIT)


async def _action(console: Console, request: Request,
                  ex: Exchange) -> tuple[pages.Viewer, Session | None, dict[str, str]]:
    """What every console action does first: sign-in checked, the form read, its CSRF token
    checked."""
    viewer, session = await run_in_threadpool(console.enter, request, ex)
    form = await _authenticated_form(ex, request)
    _check_csrf(session, form)
    return viewer, session, form


def _administered(viewer: pages.Viewer, ex: Exchange, dataset: str) -> None:
    """``dataset`` if the steward administers it; else answered like an unknown one."""
    if dataset not in viewer.administered:
        raise NotFound(f"no dataset '{dataset}' is available to you for purpose '{viewer.purpose}'")
    ex.dataset = dataset


def _check_csrf(session: Session | None, form: dict[str, str]) -> None:
    if session is not None and not Console.csrf_ok(session, form.get("csrf")):
        raise AccessDenied("the form's CSRF token is missing or wrong: reload the page and try again")


def _page(request: Request, route: str, template: str,
          build: Callable[[pages.Viewer], dict[str, Any]]) -> Response:
    console = _console(request)
    ex = governed(request, route, "console_view")
    try:
        with ex:
            viewer, session = console.enter(request, ex)
            ex.extra["page"] = route
            body = console.render(template, viewer, session, build(viewer))
            ex.finish()
        return console.html(body)
    except GovernError as exc:
        return console.refusal(request, exc)


# -- sign in and out ---------------------------------------------------------------------------------
@router.get("")
def home(request: Request) -> Response:
    console = _console(request)
    ex = governed(request, "console", "console_view")
    try:
        with ex:
            console.enter(request, ex)
            ex.finish(status=303)
        return console.secured(RedirectResponse("/console/catalog", 303))
    except GovernError as exc:
        return console.refusal(request, exc)


@router.post("/signin")
async def signin(request: Request) -> Response:
    console = _console(request)
    ex = governed(request, "console.signin", "console_signin")
    try:
        async with ex:
            form = await _read_form(ex, request, SIGNIN_LIMIT, credential=True)  # the body is the credential: bounded, tiny
            token = form.get("token", "").strip()
            credential = f"Bearer {token}" if token else request.headers.get("authorization")
            await run_in_threadpool(ex.authenticate, Bearer(credential))
            if token and not console.sessions.signin_token_ok(request.cookies.get(PRE_COOKIE), form.get("csrf")):
                raise AccessDenied("the sign-in form expired or came from another site: sign in again")
            purpose = ex.declare(form.get("purpose"), request.headers.get("x-purpose"),
                                 request.query_params.get("purpose"))
            ex.permitted("administer")
            assert ex.principal is not None and credential is not None
            _session, cookie = console.sessions.create(ex.principal.name, purpose, credential)
            await run_in_threadpool(ex.finish, status=303)
        response = console.secured(RedirectResponse("/console/catalog", 303))
        console.set_cookie(request, response, COOKIE, cookie, console.sessions.ttl)
        response.delete_cookie(PRE_COOKIE, path="/console")
        return response
    except GovernError as exc:
        return console.refusal(request, exc)


@router.post("/signout")
async def signout(request: Request) -> Response:
    console = _console(request)
    ex = governed(request, "console.signout", "console_signout")
    try:
        async with ex:
            _viewer, session = await run_in_threadpool(console.enter, request, ex)
            _check_csrf(session, await _authenticated_form(ex, request))
            if session is not None:
                console.sessions.drop(session)
            await run_in_threadpool(ex.finish, status=303)
        response = console.secured(RedirectResponse("/console", 303))
        response.delete_cookie(COOKIE, path="/console")
        return response
    except GovernError as exc:
        return console.refusal(request, exc)


# -- pages ---------------------------------------------------------------------------------------------
@router.get("/catalog")
def catalog(request: Request) -> Response:
    return _page(request, "console.catalog", "catalog.html", pages.catalog)


@router.get("/access")
def access(request: Request) -> Response:
    q = request.query_params
    kind = "roles" if q.get("kind") == "roles" else "principals"
    return _page(request, "console.access", "access.html", lambda v: pages.access(
        v, purpose=q.get("for_purpose") or None, kind=kind, clearance=q.get("clearance") or "confidential",
        dataset=q.get("dataset") or None))


@router.get("/dry-run")
def dry_run_form(request: Request) -> Response:
    return _page(request, "console.dry-run", "dryrun.html", lambda v: pages.dry_run(v, None))


@router.get("/audit")
def audit(request: Request) -> Response:
    q = request.query_params
    return _page(request, "console.audit", "audit.html",
                 lambda v: pages.audit(v, {k: q.get(k, "") for k in pages.AUDIT_FILTERS}, verify=True))


@router.get("/budgets")
def budgets(request: Request) -> Response:
    return _page(request, "console.budgets", "budgets.html", pages.budgets)


@router.get("/fleet")
def fleet(request: Request) -> Response:
    return _page(request, "console.fleet", "fleet.html", pages.fleet)


@router.get("/monitoring")
def monitoring(request: Request) -> Response:
    q = request.query_params
    return _page(request, "console.monitoring", "monitoring.html", lambda v: pages.monitoring(
        v, dataset=q.get("dataset") or None, baseline=q.get("baseline") or None))


# -- actions -------------------------------------------------------------------------------------------
@router.post("/dry-run")
async def dry_run(request: Request) -> Response:
    console = _console(request)
    ex = governed(request, "console.dry-run", "console_dry_run")
    try:
        async with ex:
            viewer, session, form = await _action(console, request, ex)
            folder = form.get("folder", "")
            ex.extra["folder"] = folder[:200]
            data = await run_in_threadpool(pages.dry_run, viewer, folder)
            if data.get("replay") is not None:
                ex.extra.update({"proposed_version": data.get("version"), "changes": len(data["changes"]),
                                 "replayed": data["replay"].replayed, "would_refuse": len(data["replay"].refused)})
            body = console.render("dryrun.html", viewer, session, data)
            await run_in_threadpool(ex.finish)
        return console.html(body)
    except GovernError as exc:
        return console.refusal(request, exc)


@router.post("/catalog/accept")
async def accept(request: Request) -> Response:
    """Accept the classification suggestion of one unclassified column: a catalog.yaml change,
    checked, written atomically, and installed (the policy reloads)."""
    console = _console(request)
    ex = governed(request, "console.accept", "console_accept")
    try:
        async with ex:
            viewer, _, form = await _action(console, request, ex)
            dataset, column = form.get("dataset", ""), form.get("column", "")
            _administered(viewer, ex, dataset)
            ex.extra["column"] = column[:200]
            change = await run_in_threadpool(_accept, viewer, dataset, column)
            ex.extra["catalog_patch"] = change[:2000]
            await run_in_threadpool(ex.finish, status=303)
        target = f"/console/catalog?accepted={quote(dataset)}.{quote(column)}#ds-{quote(dataset)}"
        return console.secured(RedirectResponse(target, 303))
    except GovernError as exc:
        return console.refusal(request, exc)


def _accept(viewer: pages.Viewer, dataset: str, column: str) -> str:
    found = pages.classification(viewer, dataset)
    state = viewer.state
    change = catalog_change(state.policy.directory, found, columns=[column],
                            min_confidence=viewer.gateway.settings.monitor.classify_min_confidence)
    if change.empty:
        why = "; ".join(f"{c}: {r}" for c, r in change.skipped) or "nothing to accept"
        raise InvalidRequest(f"'{column}' of '{dataset}' was not accepted: {why}")
    change.write()
    gw = viewer.gateway
    if gw.reloader is not None:
        gw.reloader.check_now()  # installs the edited policy now (and audits the reload)
    else:
        gw.governor.swap_policy(load_policy(state.policy.directory))
    return change.diff()


@router.post("/monitoring/profile")
async def profile(request: Request) -> Response:
    """Profile the dataset's current data version as the signed-in steward sees it."""
    console = _console(request)
    ex = governed(request, "console.profile", "console_profile")
    try:
        async with ex:
            viewer, _, form = await _action(console, request, ex)
            dataset = form.get("dataset", "")
            _administered(viewer, ex, dataset)
            store = ProfileStore.under(viewer.gateway.settings.state_dir)
            found = await run_in_threadpool(profile_dataset, viewer.governor, viewer.principal, dataset,
                                            viewer.purpose, store)
            ex.extra.update({"data_version": found.data_version, "plan_hash": found.plan_hash})
            await run_in_threadpool(ex.finish, status=303, rows=found.rows)
        return console.secured(RedirectResponse(f"/console/monitoring?dataset={quote(dataset)}", 303))
    except GovernError as exc:
        return console.refusal(request, exc)


@router.post("/monitoring/baseline")
async def baseline(request: Request) -> Response:
    """Make a profiled data version the baseline of the steward's view: the version drift alerts
    (``/metrics``) and the Monitoring page compare against."""
    console = _console(request)
    ex = governed(request, "console.baseline", "console_baseline")
    try:
        async with ex:
            viewer, _, form = await _action(console, request, ex)
            dataset, version = form.get("dataset", ""), form.get("data_version", "")
            _administered(viewer, ex, dataset)
            ex.extra["data_version"] = version[:64]
            await run_in_threadpool(pages.set_baseline, viewer, dataset, version)
            await run_in_threadpool(ex.finish, status=303)
        return console.secured(RedirectResponse(f"/console/monitoring?dataset={quote(dataset)}", 303))
    except GovernError as exc:
        return console.refusal(request, exc)


# -- vendored assets (operational routes: no data, not audited) ----------------------------------------
def _asset(path: str) -> Callable[[], Response]:
    content, media = ASSETS[path]

    def serve() -> Response:
        return Response(content, media_type=media, headers={"Cache-Control": "public, max-age=3600",
                                                           "X-Content-Type-Options": "nosniff"})
    return serve


for _path in ASSETS:
    router.add_api_route(_path.removeprefix("/console"), _asset(_path), methods=["GET"])
