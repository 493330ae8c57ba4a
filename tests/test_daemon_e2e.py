"""End to end: the client library against the real daemon (render loop on llvmpipe), port 0.

Issue 4 item 7: two clients dragging the same layer and different layers at
60 Hz for 2 s (no client's shown state ever goes backwards for its own edits,
no change is lost, all converge); an input added during a drag reaches every
client with its auto-PiP layout; a client reconnecting mid-drag resyncs; a
pipeline exported as YAML or JSON has no ``_`` keys, and neither has the
database after stamped traffic. Also ``compositord ctl`` against the daemon.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import itertools
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
import yaml
from trio_websocket import open_websocket_url

from compositord.cli import ctl as cli_ctl
from compositord.client import RESYNCED, Client, ConnectionLost, open_client
from compositord.daemon.config import load_pipeline
from compositord.daemon.state.store import iter_stored_keys
from compositord.protocol import layout, pointer
from compositord.protocol.params import validate_pipeline
from compositord.testing.dropping_proxy import DroppingProxy
from compositord.testing.plugin import RunningDaemon

SIZE = (160, 90)
DRAG_HZ = 60
DRAG_STEPS = 120  # 2 s at 60 Hz

PIPELINE: dict[str, Any] = {
    "nodes": {
        "bars": {"kind": "video::colorbars", "params": {"width": SIZE[0], "height": SIZE[1]}},
        "bars2": {"kind": "video::colorbars", "params": {"width": SIZE[0], "height": SIZE[1], "pattern": "ramp"}},
        "comp": {
            "kind": "video::compositor",
            "params": {
                "width": SIZE[0],
                "height": SIZE[1],
                "fps": 60,
                "num_inputs": 3,
                "layers": {
                    # aspect_fit off: the layout rect is the rect as given, so the view channel is predictable
                    "in_0": {"rect": {"x": 0, "y": 0, "width": 160, "height": 90}, "aspect_fit": False},
                    "in_1": {"rect": {"x": 100, "y": 50, "width": 48, "height": 27}, "aspect_fit": False},
                },
            },
        },
    },
    "connections": [
        {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
        {"from_node": "bars2", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
    ],
}


@pytest.fixture
def compositord_pipeline() -> dict[str, Any]:
    return copy.deepcopy(PIPELINE)


# ----------------------------------------------------------------------------- helpers


@dataclass
class Seen:
    """What one client showed, event after event, for the one rect field it drags."""

    pin: str
    rect_field: str  # not `field`, which would hide dataclasses.field from the defaults below
    params: list[float] = field(default_factory=list)
    view: list[float] = field(default_factory=list)
    view_layers: list[list[dict[str, Any]]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)


async def watch(client: Client, session_id: str, seen: Seen) -> None:
    async for event in client.events():
        seen.events.append(event.name)
        if event.session_id != session_id or event.node_id != "comp" or event.shown is None:
            continue
        if event.channel == "params":
            seen.params.append(pointer.resolve(event.shown, f"/layers/{seen.pin}/rect/{seen.rect_field}"))
        elif event.channel == "view":
            layers = event.shown["layers"]
            seen.view_layers.append(layers)
            mine = [layer for layer in layers if layer["id"] == seen.pin]
            if mine:
                seen.view.append(mine[0][seen.rect_field])


async def drag(client: Client, session_id: str, pin: str, field_name: str, start: int, steps: int = DRAG_STEPS) -> int:
    """Move one rect field by one pixel per step at 60 Hz, as a slider drag does; returns the last value."""
    value = start
    for step in range(steps):
        value = start + step
        with contextlib.suppress(ConnectionLost):  # the value stays pending and is re-sent after the reconnect
            await client.tune(session_id, "comp", {"layers": {pin: {"rect": {field_name: value}}}}, sync=False)
        await trio.sleep(1 / DRAG_HZ)
    return value


def never_backwards(values: list[float]) -> bool:
    return all(later >= earlier for earlier, later in itertools.pairwise(values))


async def settled(*clients: Client, session_id: str, timeout: float = 10.0) -> None:
    """Until no client has a pending value on either channel of the compositor."""
    with trio.fail_after(timeout):
        while any(client.pending(session_id, "comp", channel) for client in clients for channel in ("params", "view")):
            await trio.sleep(0.02)


async def view_shows(
    client: Client, session_id: str, pin: str, expected: dict[str, float], timeout: float = 5.0
) -> dict[str, Any]:
    with trio.fail_after(timeout):
        while True:
            shown = client.shown(session_id, "comp", "view") or {}
            for layer in shown.get("layers", []):
                if layer["id"] == pin and all(abs(layer[k] - v) < 1e-6 for k, v in expected.items()):
                    return layer
            await trio.sleep(0.02)


@pytest.fixture
async def two_clients(compositord_daemon: RunningDaemon) -> AsyncIterator[tuple[Client, Client]]:
    async with open_client(compositord_daemon.url) as a, open_client(compositord_daemon.url) as b:
        await a.get_pipeline(compositord_daemon.session_id)
        await b.get_pipeline(compositord_daemon.session_id)
        yield a, b


# ----------------------------------------------------------------------------- concurrent drags


@pytest.mark.parametrize(
    "a_drag, b_drag",
    [
        pytest.param(("in_1", "x", 101), ("in_1", "y", 51), id="same-layer"),
        pytest.param(("in_0", "x", 1), ("in_1", "x", 101), id="different-layers"),
    ],
)
async def test_two_clients_drag_at_60hz(
    compositord_daemon: RunningDaemon,
    two_clients: tuple[Client, Client],
    a_drag: tuple[str, str, int],
    b_drag: tuple[str, str, int],
) -> None:
    session = compositord_daemon.session_id
    a, b = two_clients
    seen_a, seen_b = Seen(a_drag[0], a_drag[1]), Seen(b_drag[0], b_drag[1])
    last: dict[str, int] = {}
    async with trio.open_nursery() as watchers:
        watchers.start_soon(watch, a, session, seen_a)
        watchers.start_soon(watch, b, session, seen_b)

        async def drag_as(name: str, client: Client, spec: tuple[str, str, int]) -> None:
            last[name] = await drag(client, session, *spec)

        async with trio.open_nursery() as draggers:
            draggers.start_soon(drag_as, "a", a, a_drag)
            draggers.start_soon(drag_as, "b", b, b_drag)
        await settled(a, b, session_id=session)
        # the last view data (each client's own final value, acknowledged in the view channel)
        await view_shows(a, session, a_drag[0], {a_drag[1]: last["a"]})
        await view_shows(b, session, b_drag[0], {b_drag[1]: last["b"]})
        watchers.cancel_scope.cancel()

    # No client's shown state goes backwards for its own edits, in either channel.
    for seen in (seen_a, seen_b):
        assert "nodestatsupdated" in seen.events  # at most once a second: at least one in 2 s
        assert len(seen.params) >= DRAG_STEPS // 2, f"too few params events seen: {len(seen.params)}"
        assert len(seen.view) >= 10, f"too few view events seen: {len(seen.view)}"
        assert never_backwards(seen.params), seen.params
        assert never_backwards(seen.view), seen.view
    # No change is lost: both final values are in the durable params, and in the layout.
    async with open_client(compositord_daemon.url) as observer:
        server = await observer.get_pipeline(session)
    params = server["nodes"]["comp"]["params"]
    assert params["layers"][a_drag[0]]["rect"][a_drag[1]] == last["a"]
    assert params["layers"][b_drag[0]]["rect"][b_drag[1]] == last["b"]
    view_layers = {layer["id"]: layer for layer in server["nodes"]["comp"]["view_data"]["layers"]}
    assert view_layers[a_drag[0]][a_drag[1]] == last["a"]
    assert view_layers[b_drag[0]][b_drag[1]] == last["b"]
    # All converge: each client shows exactly the server's state.
    assert a.shown(session, "comp") == params == b.shown(session, "comp")
    assert a.shown(session, "comp", "view")["layers"] == server["nodes"]["comp"]["view_data"]["layers"]
    assert b.shown(session, "comp", "view")["layers"] == server["nodes"]["comp"]["view_data"]["layers"]


# ----------------------------------------------------------------------------- server-caused layout during a drag


async def test_input_added_during_a_drag_reaches_every_client_with_its_auto_pip(
    compositord_daemon: RunningDaemon, two_clients: tuple[Client, Client]
) -> None:
    session = compositord_daemon.session_id
    a, b = two_clients
    seen_a, seen_b = Seen("in_0", "y"), Seen("in_1", "y")
    pip = layout.auto_pip_rect(2, SIZE[0], SIZE[1], SIZE[0], SIZE[1])
    expected = pip.to_dict()  # the layout's own rounding (3 decimals)

    async def add_input_midway() -> None:
        await trio.sleep(DRAG_STEPS / DRAG_HZ / 2)
        await b.add_node(session, "late", "video::colorbars", {"width": SIZE[0], "height": SIZE[1]})
        await b.connect(session, "late", "out", "comp", "in_2")

    async with trio.open_nursery() as watchers:
        watchers.start_soon(watch, a, session, seen_a)
        watchers.start_soon(watch, b, session, seen_b)
        async with trio.open_nursery() as work:
            work.start_soon(drag, a, session, "in_0", "y", 1)
            work.start_soon(add_input_midway)
        for client in (a, b):
            layer = await view_shows(client, session, "in_2", expected)
            assert (layer["source_width"], layer["source_height"]) == SIZE
        await settled(a, b, session_id=session)
        watchers.cancel_scope.cancel()

    for seen in (seen_a, seen_b):
        assert {"nodeadded", "connectionadded"} <= set(seen.events)
        # the new layer showed up in a view event this client received, while the drag went on
        with_pip = [layers for layers in seen.view_layers if any(layer["id"] == "in_2" for layer in layers)]
        assert with_pip, "no view event carried the new input"
    assert never_backwards(seen_a.view) and never_backwards(seen_a.params)
    # the drag was not disturbed by the server-caused emission
    assert a.shown(session, "comp")["layers"]["in_0"]["rect"]["y"] == DRAG_STEPS


# ----------------------------------------------------------------------------- reconnect mid-drag


async def test_client_reconnecting_mid_drag_resyncs_and_converges(compositord_daemon: RunningDaemon) -> None:
    session = compositord_daemon.session_id
    async with trio.open_nursery() as nursery:
        proxy = DroppingProxy(compositord_daemon.port)
        await nursery.start(proxy.run)
        url = f"ws://127.0.0.1:{proxy.port}/api/v1/control"
        async with open_client(url, reconnect_delay=0.05) as a, open_client(compositord_daemon.url) as b:
            await a.get_pipeline(session)
            await b.get_pipeline(session)
            first_nonce = a.nonce
            seen_a, seen_b = Seen("in_1", "x"), Seen("in_1", "x")

            async def cut_midway() -> None:
                await trio.sleep(DRAG_STEPS / DRAG_HZ / 2)
                proxy.drop_all()

            async with trio.open_nursery() as watchers:
                watchers.start_soon(watch, a, session, seen_a)
                watchers.start_soon(watch, b, session, seen_b)
                async with trio.open_nursery() as work:
                    work.start_soon(drag, a, session, "in_1", "x", 101)
                    work.start_soon(cut_midway)
                await settled(a, session_id=session)
                await view_shows(a, session, "in_1", {"x": 101 + DRAG_STEPS - 1})
                await view_shows(b, session, "in_1", {"x": 101 + DRAG_STEPS - 1})
                watchers.cancel_scope.cancel()

            assert proxy.connections >= 2, "the client did not reconnect"
            assert a.nonce != first_nonce, "a reconnect takes a new nonce"
            assert RESYNCED in seen_a.events
            assert never_backwards(seen_a.params), seen_a.params
            server = await b.get_pipeline(session)
            params = server["nodes"]["comp"]["params"]
            assert params["layers"]["in_1"]["rect"]["x"] == 101 + DRAG_STEPS - 1
            assert a.shown(session, "comp") == params == b.shown(session, "comp")
            # the other client saw the drag continue after the reconnect, up to the end
            assert seen_b.params[-1] == 101 + DRAG_STEPS - 1 and never_backwards(seen_b.params)
        nursery.cancel_scope.cancel()


# ----------------------------------------------------------------------------- no "_" keys anywhere


def private_keys(value: Any, path: str = "") -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            here = pointer.join(path, key)
            if key.startswith("_"):
                yield here
            yield from private_keys(item, here)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from private_keys(item, pointer.join(path, index))


async def test_exports_and_database_have_no_private_keys_after_stamped_traffic(
    compositord_daemon: RunningDaemon, compositord_client: Client, tmp_path: Path
) -> None:
    session = compositord_daemon.session_id
    client = compositord_client
    for step in range(30):
        await client.tune(session, "comp", {"layers": {"in_1": {"opacity": step / 30}}}, sync=step % 3 == 0)
    await client.tune(
        session,
        "comp",
        {"width": 160, "height": 90, "num_inputs": 3, "layers": {"in_1": {"rect": {"x": 1, "y": 2, "width": 30, "height": 20}}}},
        replace=True,
    )
    # A raw client hides "_" keys at every depth, stamped and not; the client library would strip them first.
    async with open_websocket_url(compositord_daemon.url) as ws:
        nasty = {"layers": {"in_0": {"opacity": 0.5, "_note": {"_deeper": [1]}}}, "_sender": "raw", "_rev": 1, "_extra": 3}
        await ws.send_message(
            json.dumps(
                {
                    "type": "request",
                    "correlation_id": "n",
                    "payload": {
                        "action": "tunenode",
                        "session_id": session,
                        "node_id": "comp",
                        "message": {"PatchParams": nasty},
                    },
                }
            )
        )
        with trio.fail_after(5):
            while json.loads(await ws.get_message()).get("correlation_id") != "n":
                pass
        await ws.send_message(
            json.dumps(
                {
                    "type": "request",
                    "correlation_id": "a",
                    "payload": {
                        "action": "addnode",
                        "session_id": session,
                        "node_id": "extra",
                        "kind": "video::colorbars",
                        "params": {"width": 32, "height": 32, "_private": True},
                    },
                }
            )
        )
        with trio.fail_after(5):
            while json.loads(await ws.get_message()).get("correlation_id") != "a":
                pass

    exported = await client.get_pipeline(session)
    assert list(private_keys(json.loads(json.dumps(exported)))) == []
    assert exported["nodes"]["comp"]["params"]["layers"]["in_0"]["opacity"] == 0.5
    document = {
        "nodes": {node_id: {"kind": node["kind"], "params": node["params"]} for node_id, node in exported["nodes"].items()},
        "connections": exported["connections"],
    }
    for text in (yaml.safe_dump(document), json.dumps(document)):
        assert "_sender" not in text and "_rev" not in text and "_acks" not in text and "_note" not in text
        assert list(private_keys(yaml.safe_load(text))) == []
    # the export is a valid pipeline file again
    export_file = tmp_path / "exported.yaml"
    export_file.write_text(yaml.safe_dump(document))
    assert load_pipeline(export_file) == validate_pipeline(document)

    # the database: every stored key, committed, read through its own connection
    async with open_client(compositord_daemon.url) as flusher:  # a sync tune returns after COMMIT
        await flusher.tune(session, "bars", {"width": 160})
    stored = list(iter_stored_keys(compositord_daemon.database))
    assert any(k.node_id == "comp" and k.key == "opacity" for k in stored), "the scan would not see a leak"
    assert [k for k in stored if k.key.startswith("_")] == []


# ----------------------------------------------------------------------------- compositord ctl


async def test_ctl_get_tune_watch(compositord_daemon: RunningDaemon) -> None:
    session = compositord_daemon.session_id

    def args(*argv: str) -> argparse.Namespace:
        parser = argparse.ArgumentParser()
        cli_ctl.add_arguments(parser)
        parsed = parser.parse_args(["--url", compositord_daemon.url, *argv])
        if parsed.ctl_command == "tune":
            parsed.patch = json.loads(parsed.params)
        return parsed

    watched = io.StringIO()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(cli_ctl.run, args("watch", session), watched)
        await trio.sleep(0.2)
        out = io.StringIO()
        patch = '{"layers": {"in_1": {"rect": {"x": 10, "y": 10, "width": 80, "height": 45}}}}'
        assert await cli_ctl.run(args("tune", session, "comp", patch), out) == 0
        assert json.loads(out.getvalue())["action"] == "success"
        with trio.fail_after(5):
            while '"nodeviewdataupdated"' not in watched.getvalue():
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    lines = [json.loads(line) for line in watched.getvalue().splitlines()]
    changed = [e for e in lines if e["event"] == "nodeparamschanged"]
    assert changed and changed[-1]["params"]["layers"]["in_1"]["rect"]["x"] == 10
    views = [e for e in lines if e["event"] == "nodeviewdataupdated"]
    assert any(layer["id"] == "in_1" and layer["x"] == 10 for e in views for layer in e["data"]["layers"])

    out = io.StringIO()
    assert await cli_ctl.run(args("get", session), out) == 0
    assert json.loads(out.getvalue())["nodes"]["comp"]["params"]["layers"]["in_1"]["rect"]["width"] == 80

    refused = await cli_ctl.run(args("tune", session, "comp", '{"layers": {"in_1": {"opacity": 2}}}'), io.StringIO())
    assert refused == 1


# ----------------------------------------------------------------------------- restart


async def test_sessions_and_params_survive_a_restart(tmp_path: Path) -> None:
    from compositord.testing.plugin import settings_for, start_daemon

    settings = settings_for(tmp_path / "state", copy.deepcopy(PIPELINE))
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, settings)
        async with open_client(daemon.url) as client:
            await client.tune(daemon.session_id, "comp", {"layers": {"in_1": {"opacity": 0.25}}})
            await client.tune(daemon.session_id, "comp", {"fps": 50}, sync=False)  # group-committed
            second = await client.create_session(
                "second", {"nodes": {"b": {"kind": "video::colorbars", "params": {"width": 32, "height": 32}}}}
            )
        nursery.cancel_scope.cancel()
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, settings)
        async with open_client(daemon.url) as client:
            sessions = {s["session_id"]: s["name"] for s in await client.list_sessions()}
            assert sessions == {daemon.session_id: daemon.session_id, second: "second"}
            params = (await client.get_pipeline(daemon.session_id))["nodes"]["comp"]["params"]
            # the stored params, not the pipeline file's: the file only seeds a session the store lacks
            assert params["layers"]["in_1"]["opacity"] == 0.25 and params["fps"] == 50
            assert (await client.get_pipeline(second))["nodes"]["b"]["params"] == {"width": 32, "height": 32}
        nursery.cancel_scope.cancel()
