"""video::push: binary frames (PROTOCOL.md section 6) through the real daemon, and the slot behind them.

Through the daemon (the test plugin's fixtures): a frame pushed with the
client library reaches the compositor (its layer appears in the view data with
the frame's size, the node's stats count it); a bad header, a byte count that
does not match, an unknown node, a node of another kind or a frame of another
shape is an ``error`` event on the sending connection only and changes nothing.
On the render loop (llvmpipe): the pushed pixels are what the compositor shows.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from trio_websocket import open_websocket_url

from compositord.daemon.engine import api
from compositord.daemon.engine.loop import RenderLoop
from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.sources.pacing import FramePacer
from compositord.daemon.engine.sources.push import PushSource
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.protocol.errors import LocalProtocolError
from compositord.protocol.frames import HEADER, pack_frame_header
from compositord.tests.engine_recorder import EventRecorder

W, H = 32, 16


@pytest.fixture
def compositord_pipeline() -> dict[str, Any]:
    return {
        "nodes": {
            "cam": {"kind": "video::push", "params": {"width": W, "height": H}},
            "comp": {"kind": "video::compositor", "params": {"width": 64, "height": 32, "fps": 30, "num_inputs": 2}},
        },
        "connections": [{"from_node": "cam", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
    }


def solid_rgba(color: tuple[int, int, int, int], width: int = W, height: int = H) -> np.ndarray:
    frame = np.empty((height, width, 4), dtype=np.uint8)
    frame[...] = color
    return frame


async def next_event(events: Any, predicate: Callable[[Any], bool], timeout: float = 5.0) -> Any:
    with trio.fail_after(timeout):
        async for event in events:
            if predicate(event):
                return event
    raise AssertionError("the event stream ended")


def cam_layer(event: Any) -> dict[str, Any] | None:
    if event.name != "nodeviewdataupdated" or event.node_id != "comp":
        return None
    return next((layer for layer in event.payload["data"]["layers"] if layer["id"] == "in_0"), None)


async def test_pushed_frames_reach_the_compositor(compositord_daemon: Any, compositord_client: Any) -> None:
    client = compositord_client
    pipeline = await client.get_pipeline(compositord_daemon.session_id)
    assert all(layer["id"] != "in_0" for layer in pipeline["nodes"]["comp"]["view_data"]["layers"]), "nothing pushed yet"
    events = client.events()
    await client.push_frame("cam", W, H, "rgba8", solid_rgba((255, 0, 0, 255)), pts_us=0)
    layer = cam_layer(await next_event(events, lambda e: cam_layer(e) is not None))
    assert layer is not None
    assert (layer["source_width"], layer["source_height"]) == (W, H)
    for index in range(1, 4):
        await client.push_frame("cam", W, H, "rgba8", solid_rgba((0, index, 0, 255)).tobytes(), pts_us=index * 33_333)
    stats = await next_event(
        events, lambda e: e.name == "nodestatsupdated" and e.node_id == "cam" and e.payload["stats"]["frames_received"] == 4
    )
    assert 0 <= stats.payload["stats"]["frames_dropped"] <= 3
    assert stats.payload["stats"]["frames_received"] == 4
    with pytest.raises(LocalProtocolError, match="needs 2048 bytes, got 2047"):
        await client.push_frame("cam", W, H, "rgba8", b"\0" * (W * H * 4 - 1))
    with pytest.raises(LocalProtocolError, match="even"):
        await client.push_frame("cam", 31, H, "nv12", b"\0" * (31 * H * 3 // 2))


async def test_a_frame_reaches_the_push_node_of_that_id_in_every_session(
    compositord_daemon: Any, compositord_client: Any
) -> None:
    """The frame header names its node by id hash only (PROTOCOL.md section 6), not its session: a second
    session with a push node of the same id gets the same frame (docs/PROTOCOL.md section 6)."""
    client = compositord_client
    pipeline = await client.get_pipeline(compositord_daemon.session_id)
    second = await client.create_session(
        "second",
        {
            "nodes": {node_id: {"kind": node["kind"], "params": node["params"]} for node_id, node in pipeline["nodes"].items()},
            "connections": pipeline["connections"],
        },
    )
    events = client.events()
    await client.push_frame("cam", W, H, "rgba8", solid_rgba((255, 0, 0, 255)), pts_us=0)
    sessions_shown: set[str] = set()
    with trio.fail_after(10):
        async for event in events:
            if cam_layer(event) is not None:
                sessions_shown.add(event.session_id)
            if sessions_shown == {compositord_daemon.session_id, second}:
                break
    for session in (compositord_daemon.session_id, second):
        layers = (await client.get_pipeline(session))["nodes"]["comp"]["view_data"]["layers"]
        assert [(layer["source_width"], layer["source_height"]) for layer in layers if layer["id"] == "in_0"] == [(W, H)]


async def test_refused_frames_are_error_events_on_the_sender_only(compositord_daemon: Any, compositord_client: Any) -> None:
    good = pack_frame_header("cam", W, H, "rgba8", 0) + solid_rgba((255, 0, 0, 255)).tobytes()
    bad_magic = b"XXXX" + good[4:]
    cases: list[tuple[str, bytes, str, str, str]] = [
        ("bad magic", bad_magic, "bad_envelope", "/magic", "CFRM"),
        ("short", good[:20], "bad_envelope", "", "shorter than the 32-byte header"),
        ("byte count", good[:-1], "bad_envelope", "", "needs 2048 frame bytes, the message has 2047"),
        ("unknown node", pack_frame_header("ghost", W, H, "rgba8", 0) + good[32:], "not_found", "/node_id_hash", "no node"),
        (
            "other kind",
            pack_frame_header("comp", W, H, "rgba8", 0) + good[32:],
            "invalid_params",
            "/node_id_hash",
            "video::compositor",
        ),
        (
            "other shape",
            pack_frame_header("cam", 16, 16, "rgba8", 0) + b"\0" * 16 * 16 * 4,
            "invalid_params",
            "/width",
            "takes 32x16 rgba8",
        ),
        (
            "other format",
            pack_frame_header("cam", W, H, "i420", 0) + b"\0" * (W * H * 3 // 2),
            "invalid_params",
            "/pixel_format",
            "takes 32x16 rgba8",
        ),
    ]
    session = compositord_daemon.session_id
    events = compositord_client.events()
    async with open_websocket_url(compositord_daemon.url) as ws:
        await ws.send_message(good)
        await next_event(events, lambda e: cam_layer(e) is not None)
        for name, message, code, path, words in cases:
            await ws.send_message(message)
            with trio.fail_after(5):
                while True:
                    received = json.loads(await ws.get_message())
                    if received["type"] == "event" and received["payload"]["event"] == "error":
                        break
            payload = received["payload"]
            assert (payload["code"], payload.get("path")) == (code, path), name
            assert words in payload["message"], (name, payload["message"])
        # The connection is still usable and nothing changed: one frame counted, the layer still there.
        await ws.send_message(
            json.dumps({"type": "request", "correlation_id": "g", "payload": {"action": "getpipeline", "session_id": session}})
        )
        with trio.fail_after(5):
            while (answer := json.loads(await ws.get_message())).get("correlation_id") != "g":
                pass
        layers = answer["payload"]["nodes"]["comp"]["view_data"]["layers"]
        assert [(layer["source_width"], layer["source_height"]) for layer in layers if layer["id"] == "in_0"] == [(W, H)]
    # The other connection (the client library's) saw no error event.
    stats = await next_event(
        events,
        lambda e: (
            e.name == "error"
            or (e.name == "nodestatsupdated" and e.node_id == "cam" and e.payload["stats"]["frames_received"] >= 1)
        ),
    )
    assert stats.name == "nodestatsupdated" and stats.payload["stats"]["frames_received"] == 1


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_frames_pushed_together_with_one_pts_keep_the_newest_and_count_the_rest() -> None:
    slot: FramePacer[SourceFrame] = FramePacer(clock=FakeClock(), latency_s=0.0)
    source = PushSource({"width": 2, "height": 2, "pixel_format": "rgba8"}, slot)
    assert source.frame(0.0) is None  # nothing pushed yet: the layer is left out
    frames = [SourceFrame("rgba8", 2, 2, bytes([i] * 16), 100 + i) for i in range(5)]
    for frame in frames:
        slot.push(frame, 0.0)
    assert source.frame(0.1) is frames[-1]
    assert source.frame(0.2) is frames[-1]  # no new frame: the last good one stays (a repeat)
    assert source.stats() == {"frames_received": 5, "frames_dropped": 4, "frames_repeated": 1, "resyncs": 0}
    # A frame checked against older params (another shape) is dropped, not shown.
    slot.push(SourceFrame("rgba8", 4, 4, bytes(64), 200), 0.0)
    assert source.frame(0.3) is frames[-1]
    assert source.stats()["frames_dropped"] == 5
    # New params of another shape: the held frame no longer fits and goes.
    source.configure({"width": 4, "height": 4, "pixel_format": "rgba8"})
    assert source.frame(0.4) is None


def test_pushed_frames_are_shown_at_the_spacing_of_their_pts_us() -> None:
    """Three frames that arrive in one burst, stamped 40 ms apart, are shown 40 ms apart."""
    clock = FakeClock()
    slot: FramePacer[SourceFrame] = FramePacer(clock=clock, latency_s=0.0)
    source = PushSource({"width": 2, "height": 2, "pixel_format": "rgba8"}, slot)
    frames = [SourceFrame("rgba8", 2, 2, bytes([i] * 16), 300 + i) for i in range(3)]
    clock.now = 5.0
    for index, frame in enumerate(frames):
        slot.push(frame, index * 40_000 / 1_000_000)
    shown = []
    for step in range(4):
        clock.now = 5.0 + step * 0.04
        shown.append(source.frame(clock.now))
    assert shown == [frames[0], frames[1], frames[2], frames[2]]
    assert source.stats()["frames_dropped"] == 0 and source.stats()["frames_repeated"] == 1


@pytest.mark.gl
async def test_pushed_pixels_are_composited(tmp_path: Path) -> None:
    full = {"x": 0, "y": 0, "width": 64, "height": 32}
    session = SessionRecord(
        "s1",
        "push",
        {
            "rgba": NodeRecord("rgba", "video::push", {"width": W, "height": H}),
            "yuv": NodeRecord("yuv", "video::push", {"width": W, "height": H, "pixel_format": "i420"}),
            "comp": NodeRecord(
                "comp",
                "video::compositor",
                {
                    "width": 64,
                    "height": 32,
                    "fps": 60,
                    "layers": {
                        "in_0": {"rect": full, "aspect_fit": False},
                        "in_1": {"rect": full, "aspect_fit": False, "visible": False},
                    },
                },
            ),
        },
        [ConnectionRecord("rgba", "out", "comp", "in_0"), ConnectionRecord("yuv", "out", "comp", "in_1")],
    )
    loop = RenderLoop(session, EventRecorder(), trio_token=trio.lowlevel.current_trio_token(), asset_dir=tmp_path)
    loop.start()

    async def output_becomes(color: tuple[int, int, int]) -> None:
        with trio.fail_after(10):
            while True:
                output = loop.latest_output("comp")
                if output is not None and np.abs(output.as_array()[8:24, 8:56, :3].astype(int) - color).max() <= 2:
                    return
                await trio.sleep(0.005)

    try:
        await loop.wait_first_frame()
        loop.push_frame(api.PushedFrame("rgba", W, H, "rgba8", 0, solid_rgba((200, 30, 90, 255)).tobytes()))
        await output_becomes((200, 30, 90))
        # I420 on top: Y=235, Cb=Cr=128 is limited-range white.
        planes = np.concatenate([np.full(W * H, 235, np.uint8), np.full(W * H // 2, 128, np.uint8)])
        loop.push_frame(api.PushedFrame("yuv", W, H, "i420", 0, memoryview(planes.tobytes())))
        loop.submit(
            api.ParamsUpdate(
                "comp",
                {
                    "width": 64,
                    "height": 32,
                    "fps": 60,
                    "layers": {"in_0": {"rect": full, "aspect_fit": False}, "in_1": {"rect": full, "aspect_fit": False}},
                },
                None,
            )
        )
        await output_becomes((255, 255, 255))
    finally:
        await trio.to_thread.run_sync(loop.stop, 5.0)


def test_header_layout_is_the_documented_one() -> None:
    header = pack_frame_header("cam", W, H, "i420", -5)
    assert len(header) == HEADER.size == 32
    magic, version, pixel_format, reserved, _, width, height, pts = HEADER.unpack(header)
    assert (magic, version, pixel_format, reserved, width, height, pts) == (b"CFRM", 1, 2, 0, W, H, -5)
