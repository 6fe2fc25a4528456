"""The steward console: server-rendered pages at ``/console`` (docs/console.md).

- :mod:`.routes`: sign in/out, the pages and the actions, each through the one request lifecycle;
- :mod:`.service`: sessions, templates, the security headers (a strict CSP, no inline code);
- :mod:`.session`: signed session cookies naming server-side sessions, CSRF tokens;
- :mod:`.pages`: what each page shows, scoped to the datasets the viewer administers;
- :mod:`.access`: the effective-access matrix, cell by cell from the plan compiler;
- :mod:`.dryrun`: a proposed policy's matrix diff and the replay of recent audited requests;
- :mod:`.fleet`: which policy version each instance enforces; :mod:`.svg`: plots drawn server-side;
- :mod:`.assets`: the vendored CSS and JS (nothing loads from a CDN).
"""
