"""``GET /healthz``: 200 when the control plane and every pipeline are healthy, else 503 with the reasons.

The body is JSON either way: ``{"status": "ok"}``, or ``{"status":
"unhealthy", "problems": [...]}`` where each problem names its
``session_id``, ``problem`` (``stalled``, ``node_error``, or
``shutting_down`` for the control plane), ``node_id`` where there is one,
and a ``message``. No token is needed: a load balancer or systemd probe has
none, and the answer holds no params, only what is broken. That this route
answers at all is the control plane's liveness.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from compositord.daemon.control.http import HttpRequest, HttpResponse
from compositord.daemon.control.router import Handler

HEALTH_PATH = "/healthz"
JSON = "application/json"


def health_route(pipeline_problems: Callable[[], list[dict[str, Any]]], accepting: Callable[[], bool]) -> Handler:
    """``pipeline_problems()``: what is wrong with the running sessions (``SessionService.problems``);
    ``accepting()``: False once the daemon is shutting down."""

    async def answer(request: HttpRequest) -> HttpResponse:
        problems: list[dict[str, Any]] = []
        if not accepting():
            problems.append({"problem": "shutting_down", "message": "the daemon is shutting down"})
        problems.extend(pipeline_problems())
        document = {"status": "unhealthy", "problems": problems} if problems else {"status": "ok"}
        body = json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n"
        return HttpResponse(503 if problems else 200, body, (("cache-control", "no-store"),), JSON)

    return answer
