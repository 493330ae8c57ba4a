"""Helpers for the sink tests: a render loop with a solid-colour source feeding sinks,
and decoding what a sink wrote with PyAV."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
import trio

from compositord.daemon.engine.api import EngineError
from compositord.daemon.engine.loop import RenderLoop
from compositord.daemon.engine.render import gl_context
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.tests.engine_recorder import EventRecorder
from compositord.tests.raw_requests import ask

W, H = 160, 90
SOLID = "#3366CC"  # the known colour of every frame (colorbars pattern "solid")
SOLID_RGB = (0x33, 0x66, 0xCC)


def sink_session(
    sinks: Mapping[str, tuple[str, dict[str, Any]]],
    *,
    fps: int = 30,
    output_format: str = "nv12",
    width: int = W,
    height: int = H,
    pattern: str = "solid",
) -> SessionRecord:
    nodes = {
        "bars": NodeRecord("bars", "video::colorbars", {"width": width, "height": height, "pattern": pattern, "color": SOLID}),
        "comp": NodeRecord(
            "comp", "video::compositor", {"width": width, "height": height, "fps": fps, "output_format": output_format}
        ),
    }
    connections = [ConnectionRecord("bars", "out", "comp", "in_0")]
    for node_id, (kind, params) in sinks.items():
        nodes[node_id] = NodeRecord(node_id, kind, params)
        connections.append(ConnectionRecord("comp", "out", node_id, "in"))
    return SessionRecord("s1", "sinks", nodes, connections)


def y4m_pipeline(path: str) -> dict[str, Any]:
    """A daemon pipeline (protocol form): colorbars into a W x H compositor into one ``sink::y4m`` node ``raw``."""
    return {
        "nodes": {
            "bars": {"kind": "video::colorbars", "params": {"width": W, "height": H}},
            "comp": {"kind": "video::compositor", "params": {"width": W, "height": H, "fps": 30}},
            "raw": {"kind": "sink::y4m", "params": {"path": path}},
        },
        "connections": [
            {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
            {"from_node": "comp", "from_pin": "out", "to_node": "raw", "to_pin": "in"},
        ],
    }


async def wait_until(predicate: Callable[[], object], timeout: float = 15.0) -> None:
    """Until ``predicate()`` is truthy (a non-empty list of what arrived counts); polled often enough for a
    render loop at 120 fps."""
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.003)


async def wait_first_frame_or_skip(loop: RenderLoop, timeout: float = 30.0) -> None:
    """Wait for a started loop's first frame; skip the test, saying why, when no OpenGL 3.3 context can be made."""
    try:
        with trio.fail_after(timeout):
            await loop.wait_first_frame()
    except EngineError as exc:
        if isinstance(exc.__cause__, gl_context.GLContextError):
            pytest.skip(f"no OpenGL 3.3 context: {exc.__cause__}")
        raise


@asynccontextmanager
async def running_loop(session: SessionRecord, tmp_path: Path) -> AsyncIterator[tuple[RenderLoop, EventRecorder]]:
    """A started render loop; stopped (sinks finished) on exit, from a worker thread like the daemon does.
    ``tmp_path`` is its asset and its output directory: sink paths are relative to it."""
    recorder = EventRecorder()
    loop = RenderLoop(
        session,
        recorder,
        trio_token=trio.lowlevel.current_trio_token(),
        asset_dir=tmp_path,
        output_dir=tmp_path,
    )
    loop.start()
    try:
        await wait_first_frame_or_skip(loop)
        yield loop, recorder
    finally:
        await trio.to_thread.run_sync(loop.stop, 15.0)


async def wait_frames_written(loop: RenderLoop, node_id: str, count: int, timeout: float = 20.0) -> None:
    await wait_until(lambda: (sink := loop.sink(node_id)) is not None and sink.frames_written >= count, timeout)


@dataclass
class Decoded:
    width: int
    height: int
    pts: list[int]
    frames: list[np.ndarray]  # RGB (h, w, 3)
    codec: str
    format_name: str


def decode(path_or_url: str | Path, *, limit: int | None = None, **open_kwargs: Any) -> Decoded:
    with av.open(str(path_or_url), **open_kwargs) as container:
        stream = container.streams.video[0]
        pts: list[int] = []
        frames: list[np.ndarray] = []
        try:
            for frame in container.decode(stream):
                pts.append(frame.pts)
                # Every test pipeline renders BT.709 (the compositor's default); Y4M has no matrix tag.
                frames.append(frame.reformat(format="rgb24", src_colorspace="itu709", dst_colorspace="itu709").to_ndarray())
                if limit is not None and len(frames) >= limit:
                    break
        except av.error.OSError:
            pass  # a UDP stream ends with an I/O error once its timeout runs out
        return Decoded(stream.width, stream.height, pts, frames, stream.codec_context.name, container.format.name)


def centre_rgb(frame: np.ndarray) -> np.ndarray:
    """Mean colour of the centre quarter (edges of a coded frame carry the most error)."""
    h, w = frame.shape[:2]
    return frame[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].reshape(-1, 3).mean(axis=0)


def assert_colour(frame: np.ndarray, expected: tuple[int, int, int] = SOLID_RGB, tolerance: float = 8.0) -> None:
    got = centre_rgb(frame)
    assert np.all(np.abs(got - np.array(expected)) <= tolerance), (
        f"centre colour {got.round(1)} is not within {tolerance} of {expected}"
    )


class Peer:
    """A raw control connection (trio-websocket): requests by correlation id, events by name."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.counter = 0

    async def request(self, action: str, **payload: Any) -> dict[str, Any]:
        self.counter += 1
        cid = f"r{self.counter}"
        return await ask(self.ws, cid, {"action": action, **payload})

    async def events(self, name: str, seconds: float) -> list[dict[str, Any]]:
        """The payloads of every ``name`` event that arrives within ``seconds``."""
        found: list[dict[str, Any]] = []
        with trio.move_on_after(seconds):
            while True:
                message = json.loads(await self.ws.get_message())
                if message["payload"].get("event") == name:
                    found.append(message["payload"])
        return found

    async def previews(self, seconds: float) -> list[dict[str, Any]]:
        return await self.events("nodepreviewupdated", seconds)
