"""Which handler answers a plain HTTP request: one table of (method, path) -> handler.

Adding an endpoint (the web panel's files, ``/metrics``, ``/healthz``) is one
entry in the table the server builds (``server.ControlServer.routes``). A path
that is not in the table is 404; a known path asked with another method is
405 with ``Allow``; a ``HEAD`` is answered by the ``GET`` handler (h11 leaves
the body out). WebSocket upgrades never reach the router: the server takes
them first, so their refusals keep the handshake's statuses (docs/PROTOCOL.md
section 1).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from compositord.daemon.control.http import HttpRequest, HttpResponse

Handler = Callable[[HttpRequest], Awaitable[HttpResponse]]


class Router:
    def __init__(self, routes: Mapping[tuple[str, str], Handler]) -> None:
        """``routes``: ``(method, path) -> handler``; methods upper case, paths exact (no patterns yet)."""
        self._routes: dict[str, dict[str, Handler]] = {}
        for (method, path), handler in routes.items():
            if method != method.upper() or not path.startswith("/"):
                raise ValueError(f"route ({method!r}, {path!r}): the method must be upper case, the path absolute")
            self._routes.setdefault(path, {})[method] = handler

    async def answer(self, request: HttpRequest) -> HttpResponse:
        methods = self._routes.get(request.path)
        if methods is None:
            return HttpResponse.text(404, f"nothing at {request.path}")
        handler = methods.get(request.method)
        if handler is None and request.method == "HEAD":
            handler = methods.get("GET")
        if handler is None:
            allowed = sorted({*methods, *(["HEAD"] if "GET" in methods else [])})
            return HttpResponse.text(405, f"{request.method} is not allowed at {request.path}", [("allow", ", ".join(allowed))])
        return await handler(request)
