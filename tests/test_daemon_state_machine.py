"""A hypothesis state machine over the protocol's action set against the real daemon.

Sessions, nodes, connections, tunes (patch and replace, sync and async) and batches, with valid
and invalid values mixed (bad sizes, unknown keys, private ``_`` keys, missing nodes, nested
compositors), driven through the client library against the daemon of the pytest plugin's
``compositord_daemon`` fixture. After every step:

- ``getpipeline`` is a valid pipeline file (``protocol.params.validate_pipeline`` accepts it and
  normalizes it to itself: what the daemon stores is durable, normalized params);
- the store on disk (read through its own loading code, on a separate read-only connection)
  holds exactly the nodes (kind, params, seq) and connections ``getpipeline`` shows;
- a refused request changed nothing.

The machine runs in a worker thread; each client call goes back to the test's trio loop with
``trio.from_thread.run``. One daemon for the whole run (a fresh session per example). Runtime:
60 examples of 20 steps in about 10 s on two cores (``COMPOSITORD_STATE_MACHINE_EXAMPLES`` for more)."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test

from compositord.client import CompositordError
from compositord.daemon.state.store import load_sessions
from compositord.protocol import envelope, params
from compositord.protocol.envelope import PATCH, Disconnect, TuneNode
from compositord.protocol.errors import RemoteProtocolError

pytestmark = pytest.mark.gl

EXAMPLES = int(os.environ.get("COMPOSITORD_STATE_MACHINE_EXAMPLES", "60"))
STEPS = 20
ASYNC_COMMIT_WAIT_S = 2.0  # tunenodeasync is committed within 100 ms (PROTOCOL.md); generous on a loaded machine

NODE_IDS = ("bars", "comp", "bars", "comp", "n1", "n2", "n3", "_n4")  # the starting nodes drawn more often
PINS = ("out", "in", "in_0", "in_1", "in_2", "in_3")
KINDS = ("video::colorbars", "video::push", "video::compositor", "sink::preview")

START = {
    "nodes": {
        "bars": {"kind": "video::colorbars", "params": {"width": 32, "height": 18}},
        "comp": {"kind": "video::compositor", "params": {"width": 32, "height": 18, "fps": 30, "num_inputs": 2}},
    },
    "connections": [{"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
}

# Tunes lower num_inputs under connected pins too: the daemon must refuse those, as
# test_a_tune_that_drops_a_connected_input_is_refused (below) checks on its own.
sizes = st.sampled_from([16, 32, 48, 0, 7])  # 0 is refused; 7 is refused for nv12/i420
private = st.dictionaries(st.sampled_from(["_note", "_sender_like", "_ui"]), st.integers(0, 3), max_size=1)
layer = st.fixed_dictionaries(
    {}, optional={"opacity": st.sampled_from([0.0, 0.5, 1.0, 1.5]), "visible": st.booleans(), "z_index": st.integers(-2, 2)}
)
compositor_patch = st.fixed_dictionaries(
    {},
    optional={
        "width": sizes,
        "height": sizes,
        "fps": st.sampled_from([1, 15, 30, 0]),
        "num_inputs": st.integers(0, 3),
        "background": st.sampled_from(["#102030", "#FFFFFF80", "red"]),
        "output_format": st.sampled_from(["rgba8", "nv12", "i420"]),
        "layers": st.dictionaries(st.sampled_from(["in_0", "in_1", "in_3", "in_9"]), layer, max_size=2),
        "text_overlays": st.lists(
            st.fixed_dictionaries({"id": st.sampled_from(["a", "b"]), "text": st.sampled_from(["", "hi", "x\ny"])}), max_size=2
        ),
        "bogus": st.just(1),
    },
)
source_patch = st.fixed_dictionaries(
    {},
    optional={
        "width": sizes,
        "height": sizes,
        "pattern": st.sampled_from(["smpte", "ramp", "solid", "zebra"]),
        "pixel_format": st.sampled_from(["rgba8", "nv12", "i420"]),
    },
)
any_patch = st.one_of(compositor_patch, source_patch).flatmap(lambda patch: private.map(lambda extra: {**patch, **extra}))


def kind_params(kind: str) -> st.SearchStrategy[dict[str, Any]]:
    if kind == "video::compositor":
        return st.fixed_dictionaries({"width": st.just(32), "height": st.just(18)}, optional={"num_inputs": st.integers(0, 2)})
    if kind in ("video::colorbars", "video::push"):
        return st.fixed_dictionaries({"width": st.sampled_from([16, 32]), "height": st.sampled_from([16, 18])})
    return st.just({})


node_specs = st.sampled_from(KINDS).flatmap(lambda kind: kind_params(kind).map(lambda p: (kind, p)))
# Mostly plausible: an output pin into an input pin (which may still be fed, missing or nested).
links = st.tuples(
    st.sampled_from(NODE_IDS),
    st.sampled_from(("out", "out", "out", "out", "out", *PINS)),
    st.sampled_from(NODE_IDS),
    st.sampled_from(("in", "in_0", "in_1", "in_0", "in_1", *PINS)),
)


def stored(database: str, session_id: str) -> dict[str, Any] | None:
    """The session as the store's own loading code reads it from disk (a separate, read-only connection)."""
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        record = load_sessions(conn).get(session_id)
    finally:
        conn.close()
    if record is None:
        return None
    return {
        "nodes": {node_id: (node.kind, node.params, node.seq) for node_id, node in record.nodes.items()},
        "connections": [conn.to_json() for conn in record.connections],
    }


def shown(pipeline: Any) -> dict[str, Any]:
    return {
        "nodes": {node_id: (node["kind"], node["params"], node["seq"]) for node_id, node in pipeline["nodes"].items()},
        "connections": [dict(conn) for conn in pipeline["connections"]],
    }


class DaemonMachine(RuleBasedStateMachine):
    """Set ``call`` (runs a coroutine function on the test's trio loop), ``client`` and ``database`` before use."""

    call: Callable[..., Any]
    client: Any
    database: str

    def __init__(self) -> None:
        super().__init__()
        self.session_id: str | None = None
        self.last: dict[str, Any] | None = None  # what getpipeline said after the previous step
        self.async_sent = False

    def request(self, fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> bool:
        """One client call; True when the daemon did it, False when it refused (and then nothing may change)."""
        try:
            self.call(fn, *args, **kwargs)
        except (CompositordError, RemoteProtocolError):
            self.expect_unchanged = True
            return False
        return True

    @initialize()
    def create(self) -> None:
        self.session_id = self.call(self.client.create_session, "machine", START)
        self.expect_unchanged = False

    def teardown(self) -> None:
        if self.session_id is not None:
            self.call(self.client.destroy_session, self.session_id)

    # ---- actions

    @rule(node=st.sampled_from(NODE_IDS), spec=node_specs, extra=private)
    def add_node(self, node: str, spec: tuple[str, dict[str, Any]], extra: dict[str, Any]) -> None:
        kind, node_params = spec
        self.request(self.client.add_node, self.session_id, node, kind, {**node_params, **extra})

    @rule(node=st.sampled_from(NODE_IDS))
    def remove_node(self, node: str) -> None:
        self.request(self.client.remove_node, self.session_id, node)

    @rule(link=links)
    def connect(self, link: tuple[str, str, str, str]) -> None:
        self.request(self.client.connect, self.session_id, *link)

    @precondition(lambda self: self.last is not None and len(self.last["nodes"]) >= 2)
    @rule(data=st.data())
    def connect_existing(self, data: st.DataObject) -> None:
        """An output of a node there into an input pin of another node there (maybe fed already, maybe nested)."""
        assert self.last is not None  # the precondition
        nodes = self.last["nodes"]
        sources = sorted(node_id for node_id, (kind, _, _) in nodes.items() if params.output_pins(kind))
        targets = {
            node_id: params.input_pins(kind, node_params)
            for node_id, (kind, node_params, _) in nodes.items()
            if params.input_pins(kind, node_params)
        }
        if not sources or not targets:
            return
        to_node = data.draw(st.sampled_from(sorted(targets)))
        link = (data.draw(st.sampled_from(sources)), "out", to_node, data.draw(st.sampled_from(targets[to_node])))
        self.request(self.client.connect, self.session_id, *link)

    @precondition(lambda self: self.last is not None and bool(self.last["connections"]))
    @rule(data=st.data())
    def disconnect_existing(self, data: st.DataObject) -> None:
        assert self.last is not None  # the precondition
        conn = data.draw(st.sampled_from(self.last["connections"]))
        self.request(
            self.client.disconnect, self.session_id, conn["from_node"], conn["from_pin"], conn["to_node"], conn["to_pin"]
        )

    @rule(link=links)
    def disconnect_any(self, link: tuple[str, str, str, str]) -> None:
        self.request(self.client.disconnect, self.session_id, *link)

    @rule(node=st.sampled_from(NODE_IDS), patch=any_patch, replace=st.booleans(), sync=st.booleans())
    def tune(self, node: str, patch: dict[str, Any], replace: bool, sync: bool) -> None:
        if not sync:
            self.async_sent = True
        self.request(self.client.tune, self.session_id, node, patch, replace=replace, sync=sync)

    @rule(
        ops=st.lists(
            st.one_of(
                st.tuples(st.just("tune"), st.sampled_from(NODE_IDS), any_patch),
                st.tuples(st.just("add"), st.sampled_from(NODE_IDS), node_specs),
                st.tuples(st.just("remove"), st.sampled_from(NODE_IDS)),
                st.tuples(st.just("connect"), links),
            ),
            min_size=1,
            max_size=4,
        )
    )
    def apply_batch(self, ops: list[tuple[Any, ...]]) -> None:
        session = self.session_id
        assert session is not None
        operations: list[envelope.BatchOperation] = []
        for op in ops:
            if op[0] == "tune":
                operations.append(envelope.TuneNode(session, op[1], envelope.PATCH, op[2]))
            elif op[0] == "add":
                operations.append(envelope.AddNode(session, op[1], op[2][0], op[2][1]))
            elif op[0] == "remove":
                operations.append(envelope.RemoveNode(session, op[1]))
            else:
                operations.append(envelope.Connect(session, *op[1]))
        self.request(self.client.apply_batch, session, operations)

    # ---- what must hold after every step

    @invariant()
    def getpipeline_is_a_pipeline_file_and_the_store_agrees(self) -> None:
        if self.session_id is None:
            return
        pipeline = self.call(self.client.get_pipeline, self.session_id)
        doc = {
            "nodes": {node_id: {"kind": node["kind"], "params": node["params"]} for node_id, node in pipeline["nodes"].items()},
            "connections": pipeline["connections"],
        }
        assert params.validate_pipeline(doc) == doc, "durable params are valid and normalized"
        now = shown(pipeline)
        deadline = time.monotonic() + (ASYNC_COMMIT_WAIT_S if self.async_sent else 0.0)
        while True:
            on_disk = stored(self.database, self.session_id)
            if on_disk == now or time.monotonic() >= deadline:
                break
            time.sleep(0.02)  # an async tune's group commit is still on its way
        assert on_disk == now, "the store on disk holds what getpipeline shows"
        if self.expect_unchanged and self.last is not None and not self.async_sent:
            assert now == self.last, "a refused request changed nothing"
        self.last = now
        self.expect_unchanged = False
        self.async_sent = False


async def test_the_daemon_and_its_store_agree_over_random_histories(compositord_daemon: Any, compositord_client: Any) -> None:
    token = trio.lowlevel.current_trio_token()

    def call(fn: Callable[..., Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        return trio.from_thread.run(lambda: fn(*args, **kwargs), trio_token=token)

    class Machine(DaemonMachine):
        pass

    Machine.call = staticmethod(call)
    Machine.client = compositord_client
    Machine.database = str(compositord_daemon.database)
    run_settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        database=None,
        # Not shrunk: a failing example can wait for a group commit at every step, and shrinking tries it hundreds
        # of times; the failing run prints every step it took.
        phases=[Phase.explicit, Phase.generate],
    )
    await trio.to_thread.run_sync(lambda: run_state_machine_as_test(Machine, settings=run_settings))


async def test_a_tune_that_drops_a_connected_input_is_refused(compositord_daemon: Any, compositord_client: Any) -> None:
    session = compositord_daemon.session_id
    before = await compositord_client.get_pipeline(session)
    assert any(conn["to_node"] == "comp" and conn["to_pin"] == "in_0" for conn in before["connections"])
    with pytest.raises(CompositordError) as info:
        await compositord_client.tune(session, "comp", {"num_inputs": 0})
    assert info.value.code == "invalid_params"
    assert info.value.path == "/payload/message/PatchParams/num_inputs"
    assert "bars.out -> comp.in_0" in info.value.message
    after = await compositord_client.get_pipeline(session)
    params.validate_pipeline(
        {
            "nodes": {node_id: {"kind": node["kind"], "params": node["params"]} for node_id, node in after["nodes"].items()},
            "connections": after["connections"],
        }
    )
    assert after["nodes"]["comp"]["params"] == before["nodes"]["comp"]["params"]


async def test_a_batch_that_disconnects_first_may_lower_num_inputs(compositord_daemon: Any, compositord_client: Any) -> None:
    session = compositord_daemon.session_id
    tune = TuneNode(session, "comp", PATCH, {"num_inputs": 0})
    unplug = Disconnect(session, "bars", "out", "comp", "in_0")
    with pytest.raises(CompositordError) as info:
        await compositord_client.apply_batch(session, [tune, unplug])  # the tune first: refused, the batch changes nothing
    assert info.value.path == "/payload/operations/0/message/PatchParams/num_inputs"
    assert (await compositord_client.get_pipeline(session))["connections"]
    await compositord_client.apply_batch(session, [unplug, tune])
    after = await compositord_client.get_pipeline(session)
    assert after["connections"] == [] and after["nodes"]["comp"]["params"]["num_inputs"] == 0
