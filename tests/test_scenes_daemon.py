"""Scenes end to end: the client library against the real daemon (render loop on llvmpipe).

Two clients edit a scene while it is on program and while it is on preview (every edit acknowledged,
both converge on the server's params; program edits show on the output, preview edits on the
``preview`` pin only); ``take`` swaps them atomically; an animated tune is acknowledged at once.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from compositord.cli import ctl as cli_ctl
from compositord.client import Client, CompositordError, open_client
from compositord.daemon.engine.api import EngineEvents
from compositord.daemon.engine.loop import RenderLoop
from compositord.daemon.state.model import SessionRecord
from compositord.protocol.errors import RemoteProtocolError
from compositord.testing.plugin import RunningDaemon, settings_for, start_daemon
from compositord.tests.sink_helpers import wait_until

pytestmark = pytest.mark.gl

W, H = 160, 90


def rect(x: int, y: int, width: int, height: int) -> dict[str, int]:
    return {"x": x, "y": y, "width": width, "height": height}


PIPELINE: dict[str, Any] = {
    "nodes": {
        "bars": {"kind": "video::colorbars", "params": {"width": W, "height": H, "pattern": "solid", "color": "#FF0000"}},
        "ramp": {"kind": "video::colorbars", "params": {"width": W, "height": H, "pattern": "solid", "color": "#0000FF"}},
        "comp": {
            "kind": "video::compositor",
            "params": {
                "width": W,
                "height": H,
                "fps": 30,
                "scenes": {
                    "wide": {
                        "layers": {
                            "in_0": {"rect": rect(0, 0, W, H), "aspect_fit": False},
                            "in_1": {"rect": rect(100, 50, 48, 27), "aspect_fit": False},
                        }
                    },
                    "pip": {
                        "layers": {
                            "in_0": {"rect": rect(0, 0, 40, 40), "aspect_fit": False},
                            "in_1": {"rect": rect(0, 0, W, H), "aspect_fit": False, "z_index": -1},
                        }
                    },
                },
                "program_scene": "wide",
                "preview_scene": "pip",
            },
        },
        "thumbs": {"kind": "sink::preview", "params": {"max_width": 80, "max_fps": 30}},
    },
    "connections": [
        {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
        {"from_node": "ramp", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
        {"from_node": "comp", "from_pin": "preview", "to_node": "thumbs", "to_pin": "in"},
    ],
}


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[tuple[RunningDaemon, list[RenderLoop]]]:
    settings = settings_for(tmp_path / "state", copy.deepcopy(PIPELINE))
    loops: list[RenderLoop] = []

    def remembered_loop(record: SessionRecord, events: EngineEvents) -> RenderLoop:
        loop = RenderLoop(record, events, trio_token=trio.lowlevel.current_trio_token(), asset_dir=settings.asset_dir)
        loops.append(loop)
        return loop

    async with trio.open_nursery() as nursery:
        running = await start_daemon(nursery, settings, engine_factory=remembered_loop)
        yield running, loops
        nursery.cancel_scope.cancel()


async def settled(*clients: Client, session_id: str) -> None:
    await wait_until(lambda: not any(c.pending(session_id, "comp", ch) for c in clients for ch in ("params", "view")))


def pixel(loop: RenderLoop, pin: str, x: int, y: int) -> tuple[int, ...]:
    output = loop.latest_output("comp", pin)
    assert output is not None
    return tuple(int(v) for v in output.as_array()[y, x, :3])


def layer_of(view: dict[str, Any], pin: str) -> dict[str, Any]:
    (found,) = [layer for layer in view["layers"] if layer["id"] == pin]
    return found


async def edit_together(a: Client, b: Client, session: str, scene: str) -> None:
    """Two clients edit one scene at once: a moves in_1 step by step, b changes in_0's rect and in_1's opacity."""

    async def moves() -> None:
        for step in range(10):
            await a.tune(session, "comp", {"scenes": {scene: {"layers": {"in_1": {"rect": rect(4 * step, 10, 48, 27)}}}}})

    async def changes() -> None:
        for step in range(10):
            await b.tune(session, "comp", {"scenes": {scene: {"layers": {"in_1": {"opacity": 0.5 + step / 20}}}}})
        await b.tune(session, "comp", {"scenes": {scene: {"layers": {"in_1": {"opacity": 1.0}}}}})

    async with trio.open_nursery() as nursery:
        nursery.start_soon(moves)
        nursery.start_soon(changes)


async def test_two_clients_edit_a_scene_on_program_and_on_preview(daemon: tuple[RunningDaemon, list[RenderLoop]]) -> None:
    running, loops = daemon
    (loop,) = loops
    session = running.session_id
    async with open_client(running.url) as a, open_client(running.url) as b:
        for client in (a, b):
            await client.get_pipeline(session)
        await wait_until(lambda: loop.latest_output("comp", "preview") is not None)
        assert pixel(loop, "out", 10, 10) == (255, 0, 0) and pixel(loop, "preview", 100, 60) == (0, 0, 255)

        # On program: both edits land, both clients converge, and the output and view data show them.
        await edit_together(a, b, session, "wide")
        await settled(a, b, session_id=session)
        server = (await a.get_pipeline(session))["nodes"]["comp"]["params"]
        assert a.shown(session, "comp") == b.shown(session, "comp") == server
        assert server["scenes"]["wide"]["layers"]["in_1"] == {"rect": rect(36, 10, 48, 27), "aspect_fit": False, "opacity": 1.0}
        await wait_until(lambda: layer_of(b.shown(session, "comp", "view"), "in_1")["x"] == 36)
        await wait_until(lambda: pixel(loop, "out", 40, 20) == (0, 0, 255))
        assert b.shown(session, "comp", "view")["scene"] == "wide"

        # On preview: the same, but the output and its view data stay as they were; the preview pin changes.
        view_before = b.shown(session, "comp", "view")
        await edit_together(b, a, session, "pip")
        await settled(a, b, session_id=session)
        server = (await b.get_pipeline(session))["nodes"]["comp"]["params"]
        assert a.shown(session, "comp") == b.shown(session, "comp") == server
        assert server["scenes"]["pip"]["layers"]["in_1"]["rect"] == rect(36, 10, 48, 27)
        # The preview pin has no view data to wait for: wait for a frame with the last edits (in_1 moved off (100, 60),
        # and at full opacity again at (40, 20)); a frame with only some of them would be half blue there.
        await wait_until(lambda: pixel(loop, "preview", 100, 60) == (0, 0, 0) and pixel(loop, "preview", 40, 20) == (0, 0, 255))
        assert b.shown(session, "comp", "view") == view_before
        assert pixel(loop, "out", 40, 20) == (0, 0, 255) and pixel(loop, "out", 150, 80) == (255, 0, 0)

        # The preview pin feeds a sink like the program does: thumbnails of the preview scene.
        jpeg, payload = await a.get_preview(session, "thumbs")
        assert jpeg[:2] == b"\xff\xd8" and (payload["width"], payload["height"]) == (80, 45)


async def test_take_swaps_preview_and_program_in_one_step(daemon: tuple[RunningDaemon, list[RenderLoop]]) -> None:
    running, loops = daemon
    (loop,) = loops
    session = running.session_id
    async with open_client(running.url) as a, open_client(running.url) as b:
        for client in (a, b):
            await client.get_pipeline(session)
        await wait_until(lambda: loop.latest_output("comp", "preview") is not None)
        stamp = await a.take(session, "comp", transition={"kind": "fade", "duration_ms": 200})
        # Shown at once as predicted, then confirmed by the server's event with the same values.
        assert (a.shown(session, "comp")["program_scene"], a.shown(session, "comp")["preview_scene"]) == ("pip", "wide")
        params = (await b.get_pipeline(session))["nodes"]["comp"]["params"]
        assert (params["program_scene"], params["preview_scene"]) == ("pip", "wide")
        assert params["transition"] == {"kind": "fade", "duration_ms": 200}
        await settled(a, b, session_id=session)
        assert a.pending(session, "comp") == {} and stamp.rev >= 1
        # The output fades to pip; the preview pin shows wide.
        await wait_until(lambda: b.shown(session, "comp", "view").get("scene") == "pip")
        await wait_until(lambda: "transition" not in b.shown(session, "comp", "view"))
        await wait_until(lambda: pixel(loop, "out", 10, 80) == (0, 0, 255) and pixel(loop, "preview", 10, 80) == (255, 0, 0))

        # Take again: back. And a compositor without a preview scene refuses, naming the node.
        await b.take(session, "comp")
        await settled(a, b, session_id=session)
        assert b.shown(session, "comp")["program_scene"] == "wide"
        await b.tune(session, "comp", {"preview_scene": None})
        with pytest.raises(CompositordError) as info:
            await a.take(session, "comp")
        assert (info.value.code, info.value.path) == ("invalid_params", "/payload/node_id")
        assert a.pending(session, "comp") == {}, "a refused take leaves nothing masked"
        with pytest.raises(CompositordError) as info:
            await a.take(session, "bars")
        assert (info.value.code, info.value.path) == ("invalid_params", "/payload/node_id")


async def test_a_take_under_a_held_t_bar_clears_it_and_lands_on_the_preview_scene(
    daemon: tuple[RunningDaemon, list[RenderLoop]],
) -> None:
    running, loops = daemon
    (loop,) = loops
    session = running.session_id
    async with open_client(running.url) as a:
        await a.get_pipeline(session)
        await a.tune(session, "comp", {"transition": {"kind": "fade", "duration_ms": 300}, "transition_position": 1.0})
        # At the end of the bar the output is pip alone (in_1 blue full frame) while wide stays on program.
        await wait_until(lambda: pixel(loop, "out", 10, 80) == (0, 0, 255))
        await wait_until(lambda: "transition" in a.shown(session, "comp", "view"))
        view = a.shown(session, "comp", "view")
        assert view["scene"] == "wide" and view["transition"]["manual"] is True and view["transition"]["position"] == 1.0
        await a.take(session, "comp")
        assert "transition_position" not in a.shown(session, "comp"), "predicted cleared at once"
        params = (await a.get_pipeline(session))["nodes"]["comp"]["params"]
        assert (params["program_scene"], params["preview_scene"]) == ("pip", "wide")
        assert "transition_position" not in params, "the take clears the bar"
        # Nothing more to run: the output already showed pip, and goes on showing it.
        for _ in range(10):
            assert pixel(loop, "out", 10, 80) == (0, 0, 255)
            await trio.sleep(0.01)
        await wait_until(lambda: a.shown(session, "comp", "view").get("scene") == "pip")
        assert "transition" not in a.shown(session, "comp", "view")
        with pytest.raises(CompositordError) as info:
            await a.tune(session, "comp", {"transition_position": -0.1})
        assert (info.value.code, info.value.path) == ("invalid_params", "/payload/message/PatchParams/transition_position")


async def test_an_animated_tune_is_acknowledged_at_once_and_moves_frame_by_frame(
    daemon: tuple[RunningDaemon, list[RenderLoop]],
) -> None:
    running, _ = daemon
    session = running.session_id
    async with open_client(running.url) as a:
        await a.get_pipeline(session)
        target = rect(20, 40, 48, 27)
        xs: list[float] = []

        async def watch() -> None:
            async for event in a.events():
                if event.name == "nodeviewdataupdated" and event.node_id == "comp":
                    xs.append(layer_of(event.payload["data"], "in_1")["x"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            with trio.fail_after(5):
                await a.tune(
                    session, "comp", {"scenes": {"wide": {"layers": {"in_1": {"rect": target}}}}}, animate={"duration_ms": 500}
                )
            # Stored and acknowledged: the durable params hold the end value at once.
            params = (await a.get_pipeline(session))["nodes"]["comp"]["params"]
            assert params["scenes"]["wide"]["layers"]["in_1"]["rect"] == target
            await wait_until(lambda: xs and xs[-1] == 20)
            nursery.cancel_scope.cancel()
        between = [x for x in xs if 20 < x < 100]
        assert len(between) >= 3, f"the layer moved through the frames in between: {xs}"
        assert np.all(np.diff([x for x in xs if x <= 100]) <= 0)


async def test_compositors_nest_through_the_daemon_but_never_in_a_cycle(daemon: tuple[RunningDaemon, list[RenderLoop]]) -> None:
    running, loops = daemon
    (loop,) = loops
    session = running.session_id
    async with open_client(running.url) as a:
        await a.get_pipeline(session)
        await a.add_node(session, "outer", "video::compositor", {"width": W, "height": H, "fps": 30, "num_inputs": 1})
        await a.connect(session, "comp", "out", "outer", "in_0")
        await a.tune(session, "comp", {"num_inputs": 3})
        with pytest.raises(CompositordError) as info:
            await a.connect(session, "outer", "out", "comp", "in_2")
        assert info.value.code == "invalid_params" and info.value.path == "/payload"
        assert "connections form a cycle: comp -> outer -> comp" in info.value.message
        # The outer compositor shows the program of comp, as one layer.
        await wait_until(lambda: (a.shown(session, "outer", "view") or {}).get("layers"))
        (layer,) = a.shown(session, "outer", "view")["layers"]
        assert (layer["id"], layer["source_width"], layer["source_height"]) == ("in_0", W, H)
        await wait_until(lambda: loop.latest_output("outer") is not None and pixel_of(loop, "outer", 120, 60) == (0, 0, 255))
        assert pixel_of(loop, "outer", 10, 10) == (255, 0, 0)


def pixel_of(loop: RenderLoop, node: str, x: int, y: int) -> tuple[int, ...]:
    output = loop.latest_output(node)
    assert output is not None
    return tuple(int(v) for v in output.as_array()[y, x, :3])


async def test_ctl_scene_and_take(daemon: tuple[RunningDaemon, list[RenderLoop]]) -> None:
    running, _ = daemon
    session = running.session_id

    async def ctl(*argv: str) -> tuple[int, Any]:
        parser = argparse.ArgumentParser()
        cli_ctl.add_arguments(parser)
        parsed = parser.parse_args(["--url", running.url, *argv])
        if parsed.ctl_command == "tune":
            parsed.patch = json.loads(parsed.params)
        out = io.StringIO()
        status = await cli_ctl.run(parsed, out)
        return status, json.loads(out.getvalue()) if out.getvalue() else None

    async def params() -> dict[str, Any]:
        async with open_client(running.url) as client:
            return dict((await client.get_pipeline(session))["nodes"]["comp"]["params"])

    status, printed = await ctl("scene", session, "comp", "pip", "--transition", "wipe", "--ms", "300", "--direction", "down")
    assert status == 0 and printed["action"] == "success" and printed["_rev"] == 1
    found = await params()
    assert found["program_scene"] == "pip"
    assert found["transition"] == {"kind": "wipe", "duration_ms": 300, "direction": "down"}
    assert (await ctl("scene", session, "comp", "wide", "--preview"))[0] == 0
    assert (await params())["preview_scene"] == "wide"
    assert (await ctl("take", session, "comp", "--transition", "cut"))[0] == 0
    found = await params()
    assert (found["program_scene"], found["preview_scene"], found["transition"]["kind"]) == ("wide", "pip", "cut")
    assert (await ctl("scene", session, "comp", "missing"))[0] == 1, "a refusal exits 1"
    # --once: the transition goes with this change only; the params keep their cut.
    assert (await ctl("scene", session, "comp", "pip", "--transition", "fade", "--ms", "100", "--once"))[0] == 0
    found = await params()
    assert (found["program_scene"], found["transition"]["kind"]) == ("pip", "cut")
    status, _ = await ctl(
        "tune", session, "comp", '{"scenes": {"wide": {"layers": {"in_1": {"opacity": 0.5}}}}}', "--animate", "200"
    )
    assert status == 0 and (await params())["scenes"]["wide"]["layers"]["in_1"]["opacity"] == 0.5


async def test_a_tune_s_transition_counts_for_its_change_only(daemon: tuple[RunningDaemon, list[RenderLoop]]) -> None:
    running, loops = daemon
    (loop,) = loops
    session = running.session_id
    fade = {"kind": "fade", "duration_ms": 2000}
    async with open_client(running.url) as a:
        await a.get_pipeline(session)
        await a.tune(session, "comp", {"transition": fade})
        views: list[dict[str, Any]] = []

        async def watch() -> None:
            async for event in a.events():
                if event.name == "nodeviewdataupdated" and event.node_id == "comp":
                    views.append(dict(event.payload["data"]))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            # A cut to program this once: the output switches in the frame the change is latched.
            await a.set_program_scene(session, "comp", "pip", transition={"kind": "cut"}, keep_transition=False)
            await wait_until(lambda: views and views[-1].get("scene") == "pip")
            assert not any("transition" in view for view in views), "a cut: no frame of a transition"
            await wait_until(lambda: pixel(loop, "out", 10, 80) == (0, 0, 255))
            # The params keep their fade, and the next change runs it.
            params = (await a.get_pipeline(session))["nodes"]["comp"]["params"]
            assert params["transition"] == fade and params["program_scene"] == "pip"
            await a.set_program_scene(session, "comp", "wide")
            await wait_until(lambda: "transition" in views[-1])
            assert views[-1]["transition"]["kind"] == "fade" and views[-1]["transition"]["to"] == "wide"
            nursery.cancel_scope.cancel()

        # Refused, naming the field: a node that is not a compositor, and a kind there is none of.
        with pytest.raises(CompositordError) as info:
            await a.tune(session, "bars", {"color": "#00FF00"}, transition={"kind": "cut"})
        assert (info.value.code, info.value.path) == ("invalid_params", "/payload/message/PatchParams/_transition")
        await a.tune(session, "bars", {"color": "#00FF00"})  # the same change without it is fine
        with pytest.raises(RemoteProtocolError) as checked:  # the client checks it before sending, as `animate`
            await a.tune(session, "comp", {"program_scene": "pip"}, transition={"kind": "dissolve"})
        assert checked.value.path == "/transition/kind"
