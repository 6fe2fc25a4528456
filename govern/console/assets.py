"""The console's vendored static files (CSS, JS): served from the package, never from a CDN.

They carry no data and are requests of no principal, so the HTTP surface lists their paths as
operational routes (not audited, like ``/healthz``).
"""

from __future__ import annotations

from importlib.resources import files

__all__ = ["ASSETS", "ASSET_PATHS"]

_STATIC = files("govern.console") / "static"

ASSETS: dict[str, tuple[bytes, str]] = {
    "/console/static/console.css": ((_STATIC / "console.css").read_bytes(), "text/css; charset=utf-8"),
    "/console/static/console.js": ((_STATIC / "console.js").read_bytes(), "text/javascript; charset=utf-8"),
}
ASSET_PATHS: frozenset[str] = frozenset(ASSETS)
