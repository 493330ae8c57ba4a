"""The session logic against hostile peers and exhausted resources (hardening issue #14, second half):
nonces that belong to their connection, budgets on every action, a full disk under the store.

The engine is the recording stand-in of tests/test_sessions.py (no GL)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from compositord.client import CompositordError, open_client
from compositord.daemon.config import Limits
from compositord.daemon.control.connection import ConnectionLimits
from compositord.daemon.control.hub import Hub
from compositord.daemon.control.server import CONTROL_PATH, ControlServer, ServerOptions
from compositord.daemon.engine import api
from compositord.daemon.sessions.service import SessionService
from compositord.daemon.state.model import ConnectionRecord, SessionRecord
from compositord.daemon.state.store import Store, open_store
from compositord.protocol import params as node_params
from compositord.testing.plugin import SMALL_PIPELINE, settings_for, start_daemon
from compositord.tests import test_sessions
from compositord.tests.disk_helpers import CannotMount, fill, small_tmpfs
from compositord.tests.test_sessions import PIPELINE, Harness, RecordingLoop, connected
from compositord.tests.test_store_hardening import big_params

harness = test_sessions.harness  # the same fixture: a session "s1" behind a real server, engines recorded

BIG_REV = 2**53
COMP = "video::compositor"


async def wait_forgotten(harness: Harness, sender: str) -> None:
    with trio.fail_after(5):
        while sender not in harness.loops["s1"].forgotten:
            await trio.sleep(0.01)


async def test_a_nonce_belongs_to_the_connection_that_used_it_first(harness: Harness) -> None:
    async with connected(harness) as alice:
        assert await alice.tune("comp", {"fps": 20, "_sender": "alice", "_rev": 1}) == {"action": "success"}
        async with connected(harness) as mallory:
            # Valid params, a refused tune (S6 would advance the ack) and a malformed request: none moves alice's ack.
            for body in ({"fps": 21}, {"fps": -1}, {"fps": 21, "bogus": True}):
                reply = await mallory.tune("comp", {**body, "_sender": "alice", "_rev": BIG_REV})
                assert reply["code"] == "conflict", reply
                assert reply["path"] == "/payload/message/PatchParams/_sender"
            reply = await mallory.request(
                {
                    "action": "tunenode",
                    "session_id": "s1",
                    "node_id": "comp",
                    "extra": 1,
                    "message": {"PatchParams": {"_sender": "alice", "_rev": BIG_REV}},
                }
            )
            assert reply["code"] == "bad_envelope"
            batch = await mallory.request(
                {
                    "action": "applybatch",
                    "session_id": "s1",
                    "operations": [
                        {
                            "action": "tunenode",
                            "node_id": "comp",
                            "message": {"PatchParams": {"fps": 22, "_sender": "m", "_rev": 1}},
                        },
                        {
                            "action": "tunenode",
                            "node_id": "comp",
                            "message": {"PatchParams": {"fps": 23, "_sender": "alice", "_rev": 9}},
                        },
                    ],
                }
            )
            assert (batch["code"], batch["path"]) == ("conflict", "/payload/operations/1/message/PatchParams/_sender")
            pipeline = await mallory.request({"action": "getpipeline", "session_id": "s1"})
            assert pipeline["nodes"]["comp"]["params"]["fps"] == 20
            assert pipeline["nodes"]["comp"]["acks"] == {"alice": 1}
            assert await alice.tune("comp", {"fps": 24, "_sender": "alice", "_rev": 2}) == {"action": "success"}
        # mallory closed: alice's nonce is still alice's, with its ack
        await alice.tune("comp", {"fps": 25, "_sender": "alice", "_rev": 3})
        assert "alice" not in harness.loops["s1"].forgotten
        pipeline = await alice.request({"action": "getpipeline", "session_id": "s1"})
        assert pipeline["nodes"]["comp"]["acks"] == {"alice": 3}
    await wait_forgotten(harness, "alice")
    # Closed: the nonce stays taken while its acks are reported as retired acks (S7).
    async with connected(harness) as mallory:
        reply = await mallory.tune("comp", {"fps": 26, "_sender": "alice", "_rev": BIG_REV})
        assert reply["code"] == "conflict"
        pipeline = await mallory.request({"action": "getpipeline", "session_id": "s1"})
        assert pipeline["nodes"]["comp"]["retired_acks"] == {"alice": 3}
        assert pipeline["nodes"]["comp"]["params"]["fps"] == 25


# --- budgets on every action --------------------------------------------------------------------


@asynccontextmanager
async def budgeted(tmp_path: Path, connection_limits: ConnectionLimits | None = None, **limits: int) -> AsyncIterator[Harness]:
    """The harness of tests/test_sessions.py with the daemon's budgets changed by ``limits``."""
    loops: dict[str, RecordingLoop] = {}

    def factory(record: SessionRecord, events: api.EngineEvents) -> RecordingLoop:
        loops[record.session_id] = RecordingLoop(record)
        return loops[record.session_id]

    async with trio.open_nursery() as nursery:
        store = Store(tmp_path)
        await nursery.start(store.run)
        service = SessionService(store, Hub(), factory, budget=dataclasses.replace(Limits(), **limits).budget())
        await store.create_session(SessionRecord.from_pipeline("s1", "test", node_params.validate_pipeline(PIPELINE)))
        assert await service.restore_session(store.sessions()["s1"])
        options = ServerOptions(host="127.0.0.1", port=0, limits=connection_limits or ConnectionLimits())
        server = ControlServer(options, service)
        host, port = await nursery.start(server.run)
        yield Harness(f"ws://{host}:{port}{CONTROL_PATH}", store, loops)
        nursery.cancel_scope.cancel()


def huge_pipeline(side: int = 7680) -> dict[str, Any]:
    nodes: dict[str, Any] = {}
    connections = []
    for index in range(3):
        nodes[f"c{index}"] = {"kind": COMP, "params": {"width": side, "height": side, "num_inputs": 1, "fps": 1}}
        nodes[f"b{index}"] = {"kind": "video::colorbars", "params": {"width": side, "height": side, "animated": True}}
        connections.append({"from_node": f"b{index}", "from_pin": "out", "to_node": f"c{index}", "to_pin": "in_0"})
    return {"nodes": nodes, "connections": connections}


def assert_over(reply: dict[str, Any], path: str, setting: str) -> None:
    assert reply.get("code") == "resource_limit", reply
    assert reply["path"] == path, reply
    assert setting in reply["message"], reply


async def test_createsession_over_the_budget_is_refused_before_anything_is_stored(tmp_path: Path) -> None:
    async with budgeted(tmp_path) as harness, connected(harness) as client:
        reply = await client.request({"action": "createsession", "name": "big", "pipeline": huge_pipeline()})
        assert reply["code"] == "resource_limit" and reply["path"].startswith("/payload/pipeline/nodes/")
        assert "max_session_bytes" in reply["message"]
        assert list(harness.store.sessions()) == ["s1"] and list(harness.loops) == ["s1"]


async def test_the_session_count_and_the_daemons_pixel_rate_across_sessions(tmp_path: Path) -> None:
    s1_rate = 320 * 180 * 30  # PIPELINE's compositor: 320x180 at its default 30 fps
    async with budgeted(tmp_path, max_sessions=2, max_total_pixels_per_second=s1_rate + 640 * 360 * 30) as harness:
        async with connected(harness) as client:
            fast: dict[str, Any] = {
                "nodes": {"c": {"kind": COMP, "params": {"width": 640, "height": 360, "fps": 31}}},
                "connections": [],
            }
            reply = await client.request({"action": "createsession", "name": "fast", "pipeline": fast})
            assert_over(reply, "/payload/pipeline/nodes/c/params/fps", "max_total_pixels_per_second")
            assert "at most 30 fps at 640x360 fits" in reply["message"]
            fast["nodes"]["c"]["params"]["fps"] = 30
            created = await client.request({"action": "createsession", "name": "fast", "pipeline": fast})
            assert created["action"] == "sessioncreated"
            reply = await client.request({"action": "createsession", "name": "third", "pipeline": {"nodes": {}}})
            assert_over(reply, "/payload", "max_sessions")
            # A tune of the first session may not take the room the second one holds now.
            reply = await client.tune("comp", {"fps": 31})
            assert_over(reply, "/payload/message/PatchParams/fps", "max_total_pixels_per_second")
            # Destroying a session gives its room back.
            await client.request({"action": "destroysession", "session_id": created["session_id"]})
            assert (await client.tune("comp", {"fps": 31})) == {"action": "success"}


async def test_tunes_addnode_connect_and_batches_are_checked_and_name_the_field(tmp_path: Path) -> None:
    async with budgeted(tmp_path, max_session_bytes=64 << 20) as harness, connected(harness) as client:
        overlays = [
            {"id": f"t{n}", "text": f"attack {n}", "rect": {"x": 0, "y": 0, "width": 8192, "height": 8192}} for n in range(12)
        ]
        reply = await client.tune("comp", {"text_overlays": overlays, "_sender": "me", "_rev": 1})
        assert reply["code"] == "resource_limit" and reply["path"].startswith("/payload/message/PatchParams/text_overlays/")
        assert (reply["_sender"], reply["_rev"], reply["node_id"]) == ("me", 1, "comp")  # S6: the client drops its value
        reply = await client.request(
            {
                "action": "addnode",
                "session_id": "s1",
                "node_id": "big",
                "kind": "video::colorbars",
                "params": {"width": 4096, "height": 4096},
            }
        )
        assert_over(reply, "/payload/params/width", "max_session_bytes")
        # A sink connected to the compositor adds its queue to the canvas: the connect is what is refused.
        await client.tune("comp", {"width": 1920, "height": 1080})
        await client.request(
            {"action": "addnode", "session_id": "s1", "node_id": "rec", "kind": "sink::file", "params": {"path": "a.mp4"}}
        )
        reply = await client.request(
            {"action": "connect", "session_id": "s1", "from_node": "comp", "from_pin": "out", "to_node": "rec", "to_pin": "in"}
        )
        assert_over(reply, "/payload", "max_session_bytes")
        assert "compositor 'comp'" in reply["message"]
        reply = await client.request(
            {
                "action": "applybatch",
                "session_id": "s1",
                "operations": [
                    {"action": "tunenode", "node_id": "comp", "message": {"PatchParams": {"fps": 25}}},
                    {"action": "tunenode", "node_id": "comp", "message": {"PatchParams": {"width": 4000, "height": 4000}}},
                ],
            }
        )
        assert_over(reply, "/payload/operations/1/message/PatchParams/width", "max_session_bytes")
        stored = harness.store.sessions()["s1"]
        assert stored.nodes["comp"].params["width"] == 1920 and stored.nodes["comp"].params.get("fps") is None
        assert "big" not in stored.nodes and stored.connections == [ConnectionRecord("bars", "out", "comp", "in_0")]


async def test_a_stored_session_over_the_budget_is_parked_at_start_and_the_daemon_serves(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    big = node_params.validate_pipeline(huge_pipeline(side=1920))
    async with open_store(state_dir) as store:
        await store.create_session(SessionRecord.from_pipeline("big", "big", big))
    settings = settings_for(state_dir, SMALL_PIPELINE, limits=Limits(max_session_bytes=64 << 20))
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, settings)
        async with open_client(daemon.url) as client:
            listed = {s["session_id"]: s for s in await client.list_sessions()}
            assert listed[daemon.session_id]["state"] == "running"  # its engine's state (docs/PROTOCOL.md section 3)
            assert "max_session_bytes" in listed["big"]["state"]["error"]
            with pytest.raises(CompositordError) as info:
                await client.get_pipeline("big")
            assert (info.value.code, info.value.path) == ("resource_limit", "/payload/session_id")
            await client.tune(daemon.session_id, "comp", {"fps": 25})  # the rest is served
            await client.destroy_session("big")
            assert [s["session_id"] for s in await client.list_sessions()] == [daemon.session_id]
        nursery.cancel_scope.cancel()


# --- a full disk under the store ----------------------------------------------------------------


@pytest.fixture
def tiny_state_dir(tmp_path: Path) -> Any:
    try:
        with small_tmpfs(tmp_path / "state", "1m") as mounted:
            yield mounted
    except CannotMount as exc:
        pytest.skip(str(exc))


async def told(client: Any, predicate: Any) -> dict[str, Any]:
    """The first event so far that ``predicate`` accepts, reading on (a request at a time) until there is one."""
    with trio.fail_after(5):
        while True:
            for event in client.events:
                if predicate(event):
                    return event
            await client.request({"action": "listsessions"})


def params_event(node_id: str, check: Any) -> Any:
    return lambda e: e["event"] == "nodeparamschanged" and e["node_id"] == node_id and check(e["params"])


async def test_a_full_disk_under_the_store_refuses_the_change_takes_it_back_and_serves_on(tiny_state_dir: Path) -> None:
    async with budgeted(tiny_state_dir) as harness, connected(harness) as client:
        loop = harness.loops["s1"]
        filler = fill(tiny_state_dir)
        for rev in range(1, 300):
            reply = await client.tune("comp", {**big_params(rev), "_sender": "me", "_rev": rev})
            if reply != {"action": "success"}:
                break
        assert reply["code"] == "resource_limit" and "disk" in reply["message"] and "full" in reply["message"], reply
        assert (reply["_sender"], reply["_rev"], reply["node_id"]) == ("me", rev, "comp")
        assert str(tiny_state_dir) not in reply["message"]
        stored = harness.store.sessions()["s1"].nodes["comp"]
        assert stored.params != big_params(rev)
        assert (await client.request({"action": "getpipeline", "session_id": "s1"}))["nodes"]["comp"]["params"] == stored.params
        # Everyone is told what is stored (the refused rev acknowledged, S6), and the engine renders it.
        await told(
            client,
            params_event("comp", lambda p: p["_acks"]["me"] == rev and "_rev" not in p and p["width"] == stored.params["width"]),
        )
        assert loop.topologies[-1].nodes["comp"].params == stored.params
        # An async tune has nobody waiting: it is taken back all the same.
        await client.ws.send_message(
            json.dumps(
                {
                    "type": "request",
                    "payload": {
                        "action": "tunenodeasync",
                        "session_id": "s1",
                        "node_id": "bars",
                        "message": {"PatchParams": {"width": 64, "_sender": "me", "_rev": rev + 1}},
                    },
                }
            )
        )
        await told(client, params_event("bars", lambda p: p["_acks"]["me"] == rev + 1 and p["width"] == 320))
        assert harness.store.sessions()["s1"].nodes["bars"].params["width"] == 320
        assert loop.topologies[-1].nodes["bars"].params["width"] == 320
        # A structure change: refused, and the node it added is removed again for everyone.
        reply = await client.request(
            {
                "action": "addnode",
                "session_id": "s1",
                "node_id": "extra",
                "kind": "video::colorbars",
                "params": {"width": 16, "height": 16},
            }
        )
        assert reply["code"] == "resource_limit"
        await told(client, lambda e: e["event"] == "noderemoved" and e["node_id"] == "extra")
        assert "extra" not in harness.store.sessions()["s1"].nodes and "extra" not in loop.topologies[-1].nodes
        # Space again: changes commit as before.
        filler.unlink()
        assert await client.tune("comp", {"fps": 12, "_sender": "me", "_rev": rev + 2}) == {"action": "success"}
    async with open_store(tiny_state_dir) as store:
        assert store.sessions()["s1"].nodes["comp"].params["fps"] == 12


# --- messages refused unread name what they carried ----------------------------------------------


async def wait_settled(client: Any, session: str, node: str) -> None:
    with trio.fail_after(5):
        while client.pending(session, node):
            await trio.sleep(0.01)


async def test_too_large_answers_the_correlation_id_and_the_stamp_so_the_client_drops_its_value(tmp_path: Path) -> None:
    async with budgeted(tmp_path, ConnectionLimits(max_text_bytes=4096)) as harness, open_client(harness.url) as client:
        huge = {"text_overlays": [{"id": "t", "text": "x" * 5000}]}
        with trio.fail_after(5), pytest.raises(CompositordError) as info:  # answered, not left waiting
            await client.tune("s1", "comp", huge)
        assert info.value.code == "too_large" and info.value.stamp is not None
        assert info.value.stamp.sender == client.nonce and info.value.node_id == "comp"
        assert client.pending("s1", "comp") == {}
        stamp = await client.tune("s1", "comp", huge, sync=False)
        await wait_settled(client, "s1", "comp")
        pipeline = await client.get_pipeline("s1")
        assert pipeline["nodes"]["comp"]["acks"] == {client.nonce: stamp.rev}  # counted as processed (S6)
        assert "text_overlays" not in pipeline["nodes"]["comp"]["params"]


async def test_rate_limited_tunes_name_their_stamps_so_the_client_drops_their_values(tmp_path: Path) -> None:
    async with budgeted(tmp_path, ConnectionLimits(messages_per_second=5)) as harness, open_client(harness.url) as client:
        for fps in range(1, 41):
            await client.tune("s1", "comp", {"fps": fps}, sync=False)
        await wait_settled(client, "s1", "comp")
        shown = client.shown("s1", "comp")
        stored = harness.store.sessions()["s1"].nodes["comp"].params
        assert shown["fps"] == stored["fps"] < 40  # the refused values are not shown, the last stored one is
