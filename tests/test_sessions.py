"""The session logic behind the WebSocket: every action of PROTOCOL.md section 3, errors with paths,
refusals that change nothing, rule S6, replays, batch atomicity.

The render loop is a recording stand-in (no GL): these tests check what the
session logic hands to it; tests/test_daemon_e2e.py runs the real one.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from compositord.daemon.control.connection import Connection
from compositord.daemon.control.hub import Hub
from compositord.daemon.control.server import CONTROL_PATH, ControlServer, ServerOptions
from compositord.daemon.engine import api
from compositord.daemon.sessions.service import SessionService
from compositord.daemon.state.model import SessionRecord
from compositord.daemon.state.store import Store, iter_stored_keys
from compositord.protocol import params as node_params
from compositord.protocol.causal import Stamp

PIPELINE = {
    "nodes": {
        "bars": {"kind": "video::colorbars", "params": {"width": 320, "height": 180}},
        "comp": {"kind": "video::compositor", "params": {"width": 320, "height": 180, "num_inputs": 2}},
    },
    "connections": [{"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
}


@dataclass
class RecordingLoop:
    """An ``api.Engine`` that records the commands it gets, in the shapes the assertions below use."""

    session: SessionRecord
    params: list[tuple[str, dict[str, Any], Stamp | None]] = field(default_factory=list)
    batches: list[list[tuple[str, dict[str, Any], Stamp | None]]] = field(default_factory=list)
    topologies: list[SessionRecord] = field(default_factory=list)
    batch_topologies: list[SessionRecord | None] = field(default_factory=list)
    forgotten: list[str] = field(default_factory=list)
    stopped: bool = False
    announced: list[str] = field(default_factory=list)  # "coming", "params", "done" / "refused": what a tune did

    @contextlib.contextmanager
    def _announcing(self) -> Iterator[None]:
        self.announced.append("coming")
        try:
            yield
        except BaseException:
            self.announced.append("refused")
            raise
        self.announced.append("done")

    def start(self) -> None:
        pass

    async def wait_first_frame(self) -> None:
        pass

    def submit(self, command: api.Command) -> None:
        if isinstance(command, api.ParamsUpdate):
            self.params.append((command.node_id, command.params, command.stamp))
            self.announced.append("params")
        elif isinstance(command, api.BatchUpdate):
            self.batches.append([(update.node_id, update.params, update.stamp) for update in command.updates])
            self.batch_topologies.append(command.topology)
        elif isinstance(command, api.TopologyUpdate):
            self.topologies.append(command.session)
        elif isinstance(command, api.ForgetSender):
            self.forgotten.append(command.sender)
        elif isinstance(command, api.Stop):
            self.stopped = True

    def preparing_command(self) -> contextlib.AbstractContextManager[None]:
        return self._announcing()

    def push_frame(self, frame: api.PushedFrame) -> None:
        pass

    def push_audio(self, audio: api.PushedAudio) -> None:
        pass

    def statistics(self) -> api.EngineStatistics:
        return api.EngineStatistics(0, 0, 0, 0)  # renders nothing: the hub does not pace by it

    def preview(self, node_id: str) -> api.PreviewImage | None:
        return None

    def last_progress(self) -> float:
        return trio.current_time()

    def health(self) -> api.EngineHealth:
        return api.EngineHealth("thread", api.ENGINE_STOPPED if self.stopped else api.ENGINE_RUNNING)

    def stop(self, timeout: float = 5.0) -> None:
        self.stopped = True


class Harness:
    def __init__(self, url: str, store: Store, loops: dict[str, RecordingLoop], hub: Hub | None = None) -> None:
        self.url = url
        self.store = store
        self.loops = loops
        self.hub = hub


class Client:
    """A raw protocol client: exact bytes in, exact JSON out."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []
        self._next = 0

    async def request(self, payload: dict[str, Any], *, correlation_id: str | None = None) -> dict[str, Any]:
        self._next += 1
        cid = correlation_id or f"r{self._next}"
        await self.ws.send_message(json.dumps({"type": "request", "correlation_id": cid, "payload": payload}))
        return await self.response(cid)

    async def response(self, cid: str) -> dict[str, Any]:
        with trio.fail_after(5):
            while True:
                message = json.loads(await self.ws.get_message())
                if message["type"] == "event":
                    self.events.append(message["payload"])
                elif message.get("correlation_id") == cid:
                    return message["payload"]

    async def send_raw(self, text: str) -> dict[str, Any]:
        await self.ws.send_message(text)
        with trio.fail_after(5):
            while True:
                message = json.loads(await self.ws.get_message())
                if message["type"] == "response":
                    return message
                self.events.append(message["payload"])

    async def tune(
        self,
        node_id: str,
        body: dict[str, Any],
        *,
        variant: str = "PatchParams",
        action: str = "tunenode",
        cid: str | None = None,
    ) -> dict[str, Any]:
        return await self.request(
            {"action": action, "session_id": "s1", "node_id": node_id, "message": {variant: body}}, correlation_id=cid
        )


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Harness]:
    loops: dict[str, RecordingLoop] = {}

    def factory(record: SessionRecord, events: api.EngineEvents) -> RecordingLoop:
        loops[record.session_id] = RecordingLoop(record)
        return loops[record.session_id]

    async with trio.open_nursery() as nursery:
        store = Store(tmp_path)
        await nursery.start(store.run)
        hub = Hub()
        service = SessionService(store, hub, factory)
        record = SessionRecord.from_pipeline("s1", "test", node_params.validate_pipeline(PIPELINE))
        await store.create_session(record)
        await service.open_session(store.sessions()["s1"])
        server = ControlServer(ServerOptions(host="127.0.0.1", port=0), service)
        host, port = await nursery.start(server.run)
        yield Harness(f"ws://{host}:{port}{CONTROL_PATH}", store, loops, hub)
        nursery.cancel_scope.cancel()


async def connect(harness: Harness) -> AsyncIterator[Client]:
    async with open_websocket_url(harness.url) as ws:
        yield Client(ws)


connected = asynccontextmanager(connect)


async def test_getpipeline_listsessions(harness: Harness) -> None:
    async with connected(harness) as client:
        pipeline = await client.request({"action": "getpipeline", "session_id": "s1"})
        assert pipeline["action"] == "pipeline"
        assert pipeline["protocol_version"] == 1
        assert pipeline["nodes"]["comp"] == {
            "kind": "video::compositor",
            "params": {"width": 320, "height": 180, "num_inputs": 2},
            "seq": 0,
            "state": "ok",
            "acks": {},
            "retired_acks": {},
        }
        assert pipeline["connections"] == PIPELINE["connections"]
        listed = await client.request({"action": "listsessions"})
        assert listed["action"] == "sessionslisted"
        assert [s["session_id"] for s in listed["sessions"]] == ["s1"]


async def test_patch_then_replace_store_route_and_notify(harness: Harness) -> None:
    loop = harness.loops["s1"]
    async with connected(harness) as client, connected(harness) as other:
        body = {"layers": {"in_0": {"opacity": 0.5, "_private": 1}}, "_sender": "me", "_rev": 1}
        assert (await client.tune("comp", body)) == {"action": "success"}
        node = harness.store.sessions()["s1"].nodes["comp"]
        assert node.params["layers"] == {"in_0": {"opacity": 0.5}}
        assert node.params["width"] == 320  # patch kept the rest
        node_id, params, stamp = loop.params[-1]
        assert (node_id, stamp) == ("comp", Stamp("me", 1))
        assert params == node.params
        # the other connection sees the change, stamped, with acks and seq
        with trio.fail_after(5):
            while not other.events:
                other.events.append(json.loads(await other.ws.get_message())["payload"])
        event = other.events[0]
        assert event["event"] == "nodeparamschanged"
        assert event["params"]["_sender"] == "me" and event["params"]["_rev"] == 1
        assert event["params"]["_acks"] == {"me": 1}
        assert event["params"]["_seq"] == node.seq
        assert event["params"]["layers"] == {"in_0": {"opacity": 0.5}}
        # replace: exactly this object
        assert (await client.tune("comp", {"width": 640, "height": 360}, variant="UpdateParams")) == {"action": "success"}
        assert harness.store.sessions()["s1"].nodes["comp"].params == {"width": 640, "height": 360}
        # merge patch null deletes
        await client.tune("comp", {"layers": {"in_0": {"opacity": 0.25}}})
        await client.tune("comp", {"layers": None})
        assert "layers" not in harness.store.sessions()["s1"].nodes["comp"].params


async def test_a_tune_is_announced_to_the_engine_before_it_is_checked_and_a_refusal_leaves_it_by_an_exception(
    harness: Harness,
) -> None:
    """An engine process's frame waits for an announced tune (engine/process.py): the tune's command settles
    it, so it must be submitted inside the announcement, and a refusal must leave it by an exception (the
    supervised engine then tells the engine)."""
    loop = harness.loops["s1"]
    async with connected(harness) as client:
        assert (await client.tune("comp", {"layers": {"in_0": {"opacity": 0.5}}})) == {"action": "success"}
        assert loop.announced == ["coming", "params", "done"]
        reply = await client.tune("comp", {"layers": {"in_0": {"opacity": 7}}})
        assert reply["code"] == "invalid_params"
        assert loop.announced == ["coming", "params", "done", "coming", "refused"]


async def test_invalid_params_change_nothing_and_name_the_path(harness: Harness) -> None:
    loop = harness.loops["s1"]
    async with connected(harness) as client:
        before = harness.store.sessions()["s1"].nodes["comp"]
        reply = await client.tune("comp", {"layers": {"in_0": {"opacity": 7}}})
        assert reply["action"] == "error" and reply["code"] == "invalid_params"
        assert reply["path"] == "/payload/message/PatchParams/layers/in_0/opacity"
        reply = await client.tune("comp", {"bogus": 1, "fps": -3})
        assert reply["code"] == "invalid_params" and len(reply["errors"]) == 2
        after = harness.store.sessions()["s1"].nodes["comp"]
        assert after == before
        assert loop.params == []


async def test_envelope_errors(harness: Harness) -> None:
    async with connected(harness) as client:
        reply = await client.send_raw("{not json")
        assert reply["payload"]["code"] == "bad_json"
        reply = await client.send_raw(json.dumps({"type": "request", "correlation_id": "x", "payload": {"action": "fly"}}))
        assert reply["payload"]["code"] == "unknown_action" and reply["payload"]["path"] == "/payload/action"
        assert reply["correlation_id"] == "x"
        reply = await client.send_raw(json.dumps({"type": "request", "payload": {"action": "getpipeline"}}))
        assert reply["payload"]["code"] == "bad_envelope" and reply["payload"]["path"] == "/payload/session_id"
        reply = await client.send_raw(json.dumps({"type": "request", "payload": {"action": "getpipeline", "session_id": "nope"}}))
        assert reply["payload"]["code"] == "not_found" and reply["payload"]["path"] == "/payload/session_id"
        reply = await client.tune("ghost", {"fps": 30})
        assert reply["code"] == "not_found" and reply["path"] == "/payload/node_id"
        # still connected and answering
        assert (await client.request({"action": "listsessions"}))["action"] == "sessionslisted"


async def test_s6_refused_stamped_tune_advances_ack_and_names_the_stamp(harness: Harness) -> None:
    async with connected(harness) as client:
        reply = await client.tune("comp", {"fps": 9999, "_sender": "n1", "_rev": 1}, cid="bad")
        assert reply["code"] == "invalid_params"
        assert (reply["_sender"], reply["_rev"], reply["node_id"]) == ("n1", 1, "comp")
        # the ack advanced: rev 1 is now a replay, rev 2 is applied and the acks show it
        reply = await client.tune("comp", {"fps": 30, "_sender": "n1", "_rev": 1})
        assert reply["code"] == "conflict" and reply["path"] == "/payload/message/PatchParams/_rev"
        assert (reply["_sender"], reply["_rev"]) == ("n1", 1)
        assert (await client.tune("comp", {"fps": 30, "_sender": "n1", "_rev": 2})) == {"action": "success"}
        # async: no success reply, but a refused stamped one is answered with its correlation id
        reply = await client.tune("comp", {"fps": -1, "_sender": "n1", "_rev": 3}, action="tunenodeasync", cid="async-bad")
        assert reply["code"] == "invalid_params" and reply["_rev"] == 3
        await client.ws.send_message(
            json.dumps(
                {
                    "type": "request",
                    "correlation_id": "ok",
                    "payload": {
                        "action": "tunenodeasync",
                        "session_id": "s1",
                        "node_id": "comp",
                        "message": {"PatchParams": {"fps": 25, "_sender": "n1", "_rev": 4}},
                    },
                }
            )
        )
        pipeline = await client.request({"action": "getpipeline", "session_id": "s1"})
        assert pipeline["nodes"]["comp"]["params"]["fps"] == 25
        changed = [e for e in client.events if e["event"] == "nodeparamschanged"]
        assert changed[-1]["params"]["_acks"] == {"n1": 4}
        # refused by the envelope (two variants): the stamp still counts as processed
        reply = await client.request(
            {
                "action": "tunenode",
                "session_id": "s1",
                "node_id": "comp",
                "message": {"PatchParams": {"fps": 30, "_sender": "n1", "_rev": 5}, "UpdateParams": {}},
            }
        )
        assert reply["code"] == "bad_envelope" and reply["path"] == "/payload/message"
        assert (reply["_sender"], reply["_rev"], reply["node_id"]) == ("n1", 5, "comp")
        assert (await client.tune("comp", {"fps": 30, "_sender": "n1", "_rev": 5}))["code"] == "conflict"
        assert harness.store.sessions()["s1"].nodes["comp"].params["fps"] == 25


async def test_replay_is_a_conflict_and_changes_nothing(harness: Harness) -> None:
    async with connected(harness) as client:
        assert (await client.tune("comp", {"fps": 24, "_sender": "a", "_rev": 5})) == {"action": "success"}
        reply = await client.tune("comp", {"fps": 50, "_sender": "a", "_rev": 5})
        assert reply["code"] == "conflict"
        reply = await client.tune("comp", {"fps": 50, "_sender": "a", "_rev": 4})
        assert reply["code"] == "conflict"
        assert harness.store.sessions()["s1"].nodes["comp"].params["fps"] == 24


async def test_s5_closing_a_connection_forgets_its_senders(harness: Harness) -> None:
    loop = harness.loops["s1"]
    async with connected(harness) as client:
        await client.tune("comp", {"fps": 24, "_sender": "gone", "_rev": 1})
    with trio.fail_after(5):
        while "gone" not in loop.forgotten:
            await trio.sleep(0.01)
    async with connected(harness) as client:
        await client.tune("comp", {"fps": 25, "_sender": "other", "_rev": 1})
        changed = [e for e in client.events if e["event"] == "nodeparamschanged"]
        # our own response may come before the event: fetch state through another tune's event
        pipeline = await client.request({"action": "getpipeline", "session_id": "s1"})
        assert pipeline["nodes"]["comp"]["params"]["fps"] == 25
        changed = [e for e in client.events if e["event"] == "nodeparamschanged"]
        assert changed and changed[-1]["params"]["_acks"] == {"other": 1}
        # S7: the closed connection's ack is no longer in acks, but getpipeline still says what it processed
        assert pipeline["nodes"]["comp"]["retired_acks"] == {"gone": 1}
        assert "gone" not in pipeline["nodes"]["comp"]["acks"]


async def test_structure_actions(harness: Harness) -> None:
    loop = harness.loops["s1"]
    async with connected(harness) as client:
        reply = await client.request(
            {
                "action": "addnode",
                "session_id": "s1",
                "node_id": "bars2",
                "kind": "video::colorbars",
                "params": {"width": 64, "height": 64},
            }
        )
        assert reply == {"action": "success"}
        reply = await client.request(
            {"action": "addnode", "session_id": "s1", "node_id": "bars2", "kind": "video::colorbars", "params": {}}
        )
        assert reply["code"] == "conflict" and reply["path"] == "/payload/node_id"
        reply = await client.request(
            {"action": "addnode", "session_id": "s1", "node_id": "x", "kind": "video::nope", "params": {}}
        )
        assert reply["code"] == "bad_envelope" and reply["path"] == "/payload/kind"
        reply = await client.request(
            {
                "action": "connect",
                "session_id": "s1",
                "from_node": "bars2",
                "from_pin": "out",
                "to_node": "comp",
                "to_pin": "in_1",
            }
        )
        assert reply == {"action": "success"}
        reply = await client.request(
            {
                "action": "connect",
                "session_id": "s1",
                "from_node": "bars2",
                "from_pin": "out",
                "to_node": "comp",
                "to_pin": "in_7",
            }
        )
        assert reply["code"] == "invalid_params" and reply["path"] == "/payload/to_pin"
        record = harness.store.sessions()["s1"]
        assert len(record.connections) == 2 and loop.topologies[-1].connections == record.connections
        reply = await client.request(
            {
                "action": "disconnect",
                "session_id": "s1",
                "from_node": "bars2",
                "from_pin": "out",
                "to_node": "comp",
                "to_pin": "in_1",
            }
        )
        assert reply == {"action": "success"}
        reply = await client.request(
            {
                "action": "disconnect",
                "session_id": "s1",
                "from_node": "bars2",
                "from_pin": "out",
                "to_node": "comp",
                "to_pin": "in_1",
            }
        )
        assert reply["code"] == "not_found"
        reply = await client.request({"action": "removenode", "session_id": "s1", "node_id": "bars"})
        assert reply == {"action": "success"}
        record = harness.store.sessions()["s1"]
        assert set(record.nodes) == {"comp", "bars2"} and record.connections == []
        kinds = [e["event"] for e in client.events]
        assert kinds == ["nodeadded", "connectionadded", "connectionremoved", "connectionremoved", "noderemoved"]


async def test_create_and_destroy_session(harness: Harness) -> None:
    async with connected(harness) as client:
        bad = {"nodes": {"a": {"kind": "video::colorbars", "params": {"width": 0}}}}
        reply = await client.request({"action": "createsession", "name": "x", "pipeline": bad})
        assert reply["code"] == "invalid_params" and reply["path"] == "/payload/pipeline/nodes/a/params/width"
        assert set(harness.store.sessions()) == {"s1"}
        reply = await client.request({"action": "createsession", "name": "second", "pipeline": PIPELINE})
        assert reply["action"] == "sessioncreated"
        new_id = reply["session_id"]
        assert harness.store.sessions()[new_id].name == "second"
        pipeline = await client.request({"action": "getpipeline", "session_id": new_id})
        assert set(pipeline["nodes"]) == {"bars", "comp"}
        reply = await client.request({"action": "destroysession", "session_id": new_id})
        assert reply == {"action": "sessiondestroyed", "session_id": new_id}
        assert harness.loops[new_id].stopped
        assert set(harness.store.sessions()) == {"s1"}
        assert [e["event"] for e in client.events] == ["sessioncreated", "sessiondestroyed"]


async def test_applybatch_is_atomic(harness: Harness) -> None:
    loop = harness.loops["s1"]
    async with connected(harness) as client:
        before = harness.store.sessions()["s1"]
        ops: list[dict[str, Any]] = [
            {"action": "tunenode", "node_id": "comp", "message": {"PatchParams": {"fps": 24, "_sender": "b", "_rev": 1}}},
            {"action": "addnode", "node_id": "extra", "kind": "video::colorbars", "params": {}},
            {"action": "tunenode", "node_id": "comp", "message": {"PatchParams": {"layers": {"in_0": {"opacity": 2}}}}},
        ]
        reply = await client.request({"action": "applybatch", "session_id": "s1", "operations": ops, "atomic": True})
        assert reply["code"] == "invalid_params"
        assert reply["path"] == "/payload/operations/2/message/PatchParams/layers/in_0/opacity"
        assert (reply["_sender"], reply["_rev"]) == ("b", 1)
        assert harness.store.sessions()["s1"] == before and loop.batches == [] and loop.topologies == []
        ops[2]["message"] = {"PatchParams": {"layers": {"in_0": {"opacity": 0.5}}}}
        ops[0]["message"]["PatchParams"]["_rev"] = 2  # rev 1 was processed (refused) already
        ops.append({"action": "connect", "from_node": "extra", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"})
        reply = await client.request({"action": "applybatch", "session_id": "s1", "operations": ops, "atomic": True})
        assert reply["action"] == "batchapplied"
        record = harness.store.sessions()["s1"]
        assert record.nodes["comp"].params["fps"] == 24
        assert record.nodes["comp"].params["layers"]["in_0"]["opacity"] == 0.5
        assert "extra" in record.nodes and len(record.connections) == 2
        # one BatchUpdate carries both tunes of the batch and the new structure: one frame
        assert len(loop.batches) == 1 and [u[0] for u in loop.batches[0]] == ["comp", "comp"]
        assert loop.topologies == []
        topology = loop.batch_topologies[0]
        assert topology is not None and "extra" in topology.nodes and len(topology.connections) == 2
        assert loop.batches[0][-1][1] == record.nodes["comp"].params


async def test_the_connections_that_tune_are_served_first(harness: Harness) -> None:
    assert harness.hub is not None
    hub = harness.hub

    def editing() -> list[set[str]]:
        return [connection.senders for connection in hub.editing() if isinstance(connection, Connection)]

    async with connected(harness) as watcher, connected(harness) as tuner, connected(harness) as batcher:
        await watcher.request({"action": "listsessions"})  # a request that edits nothing
        assert len(hub.subscribers()) == 3 and editing() == []
        refused = await batcher.tune("comp", {"fps": 0, "_sender": "refused", "_rev": 1})
        assert refused["code"] == "invalid_params"
        assert editing() == []  # a refused edit is none
        reply = await tuner.tune("comp", {"fps": 25, "_sender": "tuner", "_rev": 1})
        assert reply == {"action": "success"}
        assert editing() == [{"tuner"}]
        ops = [
            {"action": "tunenode", "node_id": "comp", "message": {"PatchParams": {"fps": 24, "_sender": "batcher", "_rev": 1}}}
        ]
        reply = await batcher.request({"action": "applybatch", "session_id": "s1", "operations": ops})
        assert reply["action"] == "batchapplied"
        assert editing() == [{"tuner"}, {"refused", "batcher"}]
        assert [c.senders for c in hub.subscribers() if isinstance(c, Connection)] == [{"tuner"}, {"refused", "batcher"}, set()]


async def test_no_private_keys_reach_the_database(harness: Harness) -> None:
    async with connected(harness) as client:
        for rev in range(1, 20):
            await client.tune("comp", {"layers": {"in_0": {"opacity": rev / 20, "_x": {"_y": 1}}}, "_sender": "z", "_rev": rev})
        await client.request(
            {"action": "addnode", "session_id": "s1", "node_id": "n", "kind": "video::colorbars", "params": {"_hidden": 1}}
        )
    await harness.store.flush()
    stored = list(iter_stored_keys(harness.store.db_path))
    assert stored, "the scan found no keys at all: it would not notice a leak either"
    assert [k for k in stored if k.key.startswith("_")] == []


async def test_distinct_senders_per_connection_are_bounded(harness: Harness) -> None:
    from compositord.daemon.sessions.senders import MAX_SENDERS_PER_CONNECTION

    async with connected(harness) as client:
        for i in range(MAX_SENDERS_PER_CONNECTION):
            assert (await client.tune("comp", {"fps": 30, "_sender": f"s{i}", "_rev": 1})) == {"action": "success"}
        reply = await client.tune("comp", {"fps": 31, "_sender": "one-too-many", "_rev": 1})
        assert reply["code"] == "bad_envelope" and reply["path"] == "/payload/message/PatchParams/_sender"
        assert harness.store.sessions()["s1"].nodes["comp"].params["fps"] == 30
        # a known sender still works
        assert (await client.tune("comp", {"fps": 32, "_sender": "s0", "_rev": 2})) == {"action": "success"}


async def test_retired_acks_settings_bound_what_getpipeline_reports(tmp_path: Path) -> None:
    """Rule S7's bound comes from the settings: with max_retired_acks=1 only the last closed sender stays."""
    from compositord.protocol.errors import LocalProtocolError

    def factory(record: SessionRecord, events: api.EngineEvents) -> RecordingLoop:
        return RecordingLoop(record)

    with pytest.raises(LocalProtocolError, match="max_retired"):
        SessionService(Store(tmp_path / "unused"), Hub(), factory, max_retired_acks=0)
    async with trio.open_nursery() as nursery:
        store = Store(tmp_path)
        await nursery.start(store.run)
        service = SessionService(store, Hub(), factory, max_retired_acks=1)
        await store.create_session(SessionRecord.from_pipeline("s1", "test", node_params.validate_pipeline(PIPELINE)))
        await service.open_session(store.sessions()["s1"])
        host, port = await nursery.start(ControlServer(ServerOptions(host="127.0.0.1", port=0), service).run)
        harness = Harness(f"ws://{host}:{port}{CONTROL_PATH}", store, {})
        for sender in ("first", "second"):
            async with connected(harness) as client:
                await client.tune("comp", {"fps": 24, "_sender": sender, "_rev": 3})
        async with connected(harness) as client:
            with trio.fail_after(5):
                while True:
                    pipeline = await client.request({"action": "getpipeline", "session_id": "s1"})
                    if pipeline["nodes"]["comp"]["retired_acks"] == {"second": 3}:
                        break
                    await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
