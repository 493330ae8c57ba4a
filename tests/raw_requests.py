"""Requests over a raw trio-websocket connection, answered by correlation id.

For tests that must see the wire as it is (no client library in between):
events and other replies that arrive first are read and passed over.
"""

from __future__ import annotations

import json
from typing import Any

import trio

REPLY_TIMEOUT = 10.0  # seconds; a daemon that does not answer fails the test instead of hanging it


def request_text(correlation_id: str, payload: dict[str, Any]) -> str:
    return json.dumps({"type": "request", "correlation_id": correlation_id, "payload": payload})


async def send_and_await_reply(
    ws: Any, text: str | bytes, correlation_id: str, *, passed_over: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Send ``text`` as is, then return the payload of the first message carrying ``correlation_id``.

    Messages read before the reply go into ``passed_over`` when it is given: an
    event the request caused may arrive before the request's own reply.
    """
    await ws.send_message(text)
    with trio.fail_after(REPLY_TIMEOUT):
        while True:
            message = json.loads(await ws.get_message())
            if message.get("correlation_id") == correlation_id:
                return message["payload"]
            if passed_over is not None:
                passed_over.append(message)


async def ask(
    ws: Any, correlation_id: str, payload: dict[str, Any], *, passed_over: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Send one well-formed request and return its reply's payload."""
    return await send_and_await_reply(ws, request_text(correlation_id, payload), correlation_id, passed_over=passed_over)
