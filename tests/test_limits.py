"""Every limit of PROTOCOL.md section 1 and of the params schema, met through the real daemon.

The bare server's limits are tested in tests/test_server_handshake.py, the schema's ranges in
tests/test_params.py and the asset gate in tests/test_render_assets.py; here each limit is reached
the way a client reaches it, and each refusal must leave the session unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from compositord.daemon.config import Limits, Settings
from compositord.protocol.params import MAX_CANVAS, MAX_INPUTS, MAX_OVERLAYS
from compositord.testing.plugin import settings_for
from compositord.tests.raw_requests import ask, send_and_await_reply

RATE = 50.0


@pytest.fixture
def compositord_settings(tmp_path: Path, compositord_pipeline: dict[str, Any]) -> Settings:
    limits = Limits(max_connections=4, messages_per_second=RATE)
    return settings_for(tmp_path / "state", compositord_pipeline, limits=limits)


def _tune(session: str, patch: dict[str, Any], node: str = "comp") -> dict[str, Any]:
    return {"action": "tunenode", "session_id": session, "node_id": node, "message": {"PatchParams": patch}}


async def _params(ws: Any, session: str) -> dict[str, Any]:
    await trio.sleep(1.0 / RATE * 2)  # stay under the rate limit of this fixture
    pipeline = await ask(ws, "get", {"action": "getpipeline", "session_id": session})
    return {node_id: node["params"] for node_id, node in pipeline["nodes"].items()}


async def test_text_message_limit_is_64_kib(compositord_daemon: Any) -> None:
    async with open_websocket_url(compositord_daemon.url) as ws:
        padding = "x" * (64 * 1024 - 200)
        near = json.dumps(
            {"type": "request", "correlation_id": "near", "payload": {"action": "listsessions", "pad": padding[:100]}}
        )
        assert (await send_and_await_reply(ws, near, "near"))["action"] in ("sessionslisted", "error")
        over = json.dumps(
            {"type": "request", "correlation_id": "over", "payload": {"action": "listsessions", "pad": padding + "y" * 400}}
        )
        assert len(over.encode()) > 64 * 1024
        await ws.send_message(over)
        reply = json.loads(await ws.get_message())
        assert reply["payload"]["code"] == "too_large"
        await trio.sleep(0.05)
        assert (await ask(ws, "after", {"action": "listsessions"}))["action"] == "sessionslisted"  # still open


async def test_binary_message_limit_is_32_mib(compositord_daemon: Any) -> None:
    async with open_websocket_url(compositord_daemon.url, max_message_size=64 * 1024 * 1024) as ws:
        await ws.send_message(b"\0" * 1024)  # under the limit: refused as a frame, connection open
        assert json.loads(await ws.get_message())["payload"]["event"] == "error"
        await ws.send_message(b"\0" * (32 * 1024 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as info:
            with trio.fail_after(20):
                while True:
                    await ws.get_message()
        assert info.value.reason is not None and info.value.reason.code == 1009


async def test_connection_count_limit(compositord_daemon: Any) -> None:
    url = compositord_daemon.url
    async with open_websocket_url(url), open_websocket_url(url), open_websocket_url(url), open_websocket_url(url):
        with pytest.raises(ConnectionRejected) as info:
            async with open_websocket_url(url, connect_timeout=5):
                pass
        assert info.value.status_code == 503
    with trio.fail_after(5):
        while True:  # slots come back once the connections are gone
            try:
                async with open_websocket_url(url, connect_timeout=5):
                    break
            except ConnectionRejected:
                await trio.sleep(0.02)


async def test_per_connection_rate_limit(compositord_daemon: Any) -> None:
    url = compositord_daemon.url
    async with open_websocket_url(url) as fast, open_websocket_url(url) as calm:
        for i in range(int(RATE) * 2):
            await fast.send_message(
                json.dumps({"type": "request", "correlation_id": f"f{i}", "payload": {"action": "listsessions"}})
            )
        codes: list[str] = []
        with trio.fail_after(10):
            while len(codes) < int(RATE) * 2:
                message = json.loads(await fast.get_message())
                if str(message.get("correlation_id", "")).startswith("f"):
                    codes.append(message["payload"].get("code", message["payload"]["action"]))
        assert codes.count("rate_limited") >= RATE // 2
        assert "sessionslisted" in codes
        # The bucket is per connection: another client is served meanwhile.
        assert (await ask(calm, "calm", {"action": "listsessions"}))["action"] == "sessionslisted"


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"num_inputs": MAX_INPUTS + 1}, "/num_inputs"),
        ({"text_overlays": [{"id": f"t{i}", "text": "a"} for i in range(MAX_OVERLAYS + 1)]}, "/text_overlays"),
        ({"image_overlays": [{"id": f"i{i}", "asset_path": "a.png"} for i in range(MAX_OVERLAYS + 1)]}, "/image_overlays"),
        ({"text_overlays": [{"id": "t", "text": "a" * 1001}]}, "/text_overlays/0/text"),
        ({"width": MAX_CANVAS + 1}, "/width"),
        ({"height": 0}, "/height"),
        ({"image_overlays": [{"id": "i", "asset_path": "../outside.png"}]}, "/image_overlays/0/asset_path"),
        ({"image_overlays": [{"id": "i", "asset_path": "/etc/passwd"}]}, "/image_overlays/0/asset_path"),
    ],
    ids=["layers", "text-overlays", "image-overlays", "text-length", "canvas-width", "canvas-zero", "traversal", "absolute"],
)
async def test_schema_limits_are_refused_with_a_path_and_change_nothing(
    compositord_daemon: Any, patch: dict[str, Any], path: str
) -> None:
    session = compositord_daemon.session_id
    async with open_websocket_url(compositord_daemon.url) as ws:
        before = await _params(ws, session)
        reply = await ask(ws, "t", _tune(session, patch))
        assert reply["action"] == "error" and reply["code"] == "invalid_params", reply
        assert reply["path"] == "/payload/message/PatchParams" + path, reply
        assert await _params(ws, session) == before


async def test_the_limits_themselves_are_accepted(compositord_daemon: Any) -> None:
    session = compositord_daemon.session_id
    async with open_websocket_url(compositord_daemon.url) as ws:
        patch = {
            "num_inputs": MAX_INPUTS,
            "text_overlays": [
                {"id": f"t{i}", "text": "a" * 1000 if i == 0 else "b", "font_size": 4} for i in range(MAX_OVERLAYS)
            ],
        }
        assert (await ask(ws, "t", _tune(session, patch)))["action"] == "success"


@pytest.mark.parametrize("target", ["link-out", "dev", "proc", "fifo"])
async def test_asset_sandbox_through_the_daemon(compositord_daemon: Any, tmp_path: Path, target: str) -> None:
    """Paths that pass the schema (relative, no '..') but lead out of the asset directory or to a
    non-regular file: the overlay is left out and reported on the node; the daemon renders on."""
    assets = compositord_daemon.settings.asset_dir
    assets.mkdir(parents=True, exist_ok=True)
    outside = tmp_path / "secret.png"
    outside.write_bytes(b"not for clients")
    link = assets / f"{target}.png"
    if target == "link-out":
        link.symlink_to(outside)
    elif target == "dev":
        link.symlink_to("/dev/zero")
    elif target == "proc":
        link.symlink_to("/proc/self/environ")
    else:
        os.mkfifo(link)  # opening it for reading would block the render thread forever
    session = compositord_daemon.session_id
    async with open_websocket_url(compositord_daemon.url) as ws:
        # The render thread may refuse the overlay before the tune's reply is sent (the reply waits for the commit).
        seen: list[dict[str, Any]] = []
        reply = await ask(
            ws, "t", _tune(session, {"image_overlays": [{"id": "leak", "asset_path": link.name}]}), passed_over=seen
        )
        assert reply["action"] == "success"  # the path is well-formed: the render thread's gate decides

        def node_error(message: dict[str, Any]) -> dict[str, Any] | None:
            payload = message["payload"]
            if payload.get("event") == "nodestatechanged" and payload.get("node_id") == "comp" and payload["state"] != "ok":
                return payload
            return None

        error = next((p for p in map(node_error, seen) if p is not None), None)
        with trio.fail_after(10):
            while error is None:
                error = node_error(json.loads(await ws.get_message()))
        assert "leak" in error["state"]["error"], error
        # still rendering and answering
        pipeline = await ask(ws, "g", {"action": "getpipeline", "session_id": session})
        assert "leak" in pipeline["nodes"]["comp"]["state"]["error"]
        overlays = pipeline["nodes"]["comp"].get("view_data", {}).get("image_overlays", [])
        assert all(overlay["id"] != "leak" for overlay in overlays)
