"""The web panel's static files (package data of ``compositord.daemon.panel``), served as they are.

Every file of the panel folder with a known type is read once, when the
server is made, and answered from memory: ``/`` is ``index.html``, and every
other file is at ``/NAME``. No token is needed for them (a page cannot send
one before it has loaded and asked for it): they are the same public code as
in the wheel and carry no data. What does carry data, the WebSocket and
``/metrics``, needs the token (``server.py``).

Each answer forbids what the panel never does: scripts or styles from
elsewhere, inline scripts, framing by another site (``Content-Security-Policy``),
and content sniffing; ``Cache-Control: no-cache`` makes a browser revalidate,
so a new daemon's panel is never mixed with an old one's modules.
"""

from __future__ import annotations

from importlib import resources
from pathlib import PurePosixPath

from compositord.daemon.control.http import HttpRequest, HttpResponse
from compositord.daemon.control.router import Handler

PANEL_PACKAGE = "compositord.daemon.panel"
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".ico": "image/x-icon",
}
# 'self' in connect-src admits the WebSocket to the same host and port (CSP level 3); blob: is the preview's JPEGs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; style-src 'self'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
)
HEADERS = (
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("cache-control", "no-cache"),
)


# The panel asks here whether it needs a token, and whether the one it has is right: the server's token
# check answers 401 before this handler runs; past it, there is nothing more to say.
AUTH_CHECK_PATH = "/api/v1/auth"


async def auth_check(request: HttpRequest) -> HttpResponse:
    return HttpResponse(200, b'{"authorized":true}\n', (("cache-control", "no-store"),), "application/json")


def panel_responses() -> dict[str, HttpResponse]:
    """``path -> answer`` for every file of the panel folder whose type is known."""
    answers: dict[str, HttpResponse] = {}
    for entry in resources.files(PANEL_PACKAGE).iterdir():
        content_type = CONTENT_TYPES.get(PurePosixPath(entry.name).suffix)
        if content_type is None or not entry.is_file():
            continue
        answers["/" + entry.name] = HttpResponse(200, entry.read_bytes(), HEADERS, content_type)
    if "/index.html" in answers:
        answers["/"] = answers["/index.html"]
    return answers


def panel_routes() -> dict[tuple[str, str], Handler]:
    """The router's entries: ``("GET", path)`` for each file."""
    routes: dict[tuple[str, str], Handler] = {}
    for path, response in panel_responses().items():

        async def answer(request: HttpRequest, response: HttpResponse = response) -> HttpResponse:
            return response

        routes[("GET", path)] = answer
    return routes
