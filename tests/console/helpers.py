"""Signing in to the console the way a browser does, for the in-process tests."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.gateway import World

PAGES = ("catalog", "access", "dry-run", "audit", "budgets", "fleet", "monitoring")


def form_token(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]*)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def sign_in(client: TestClient, world: World, who: str = "carol", purpose: str = "governance") -> str:
    """Sign in through the form; returns the session's CSRF token (from a page)."""
    page = client.get("/console")
    assert page.status_code == 401
    r = client.post("/console/signin", data={"token": world.keys[who], "purpose": purpose,
                                             "csrf": form_token(page.text)}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return form_token(client.get("/console/fleet").text)


def records(client: TestClient, request_id: str) -> list:
    return client.app.state.gateway.audit.records(limit=1000, request_id=request_id)
