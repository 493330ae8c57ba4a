"""compositord.client against the in-process fake server (tests/fake_server.py): requests, masking, reconnects."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import trio

from compositord.client import (
    RESYNCED,
    ClientEvent,
    CompositordError,
    ConnectFailed,
    ConnectionLost,
    RequestTimedOut,
    UnexpectedResponse,
    open_client,
)
from compositord.client.events import EventBuffer, EventStream
from compositord.protocol import envelope
from compositord.protocol.causal import VIEW_CHANNEL, Stamp
from compositord.protocol.envelope import PATCH, AddNode, Request, TuneNode, serialize
from compositord.tests import fake_server
from compositord.tests.fake_server import FakeServer

S = fake_server.DEFAULT_SESSION


@pytest.fixture
async def server(nursery: trio.Nursery) -> FakeServer:
    return await nursery.start(fake_server.serve)


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.005)


async def collect(events: AsyncIterator[ClientEvent], quiet: float = 0.2) -> list[ClientEvent]:
    """Events until none arrives for ``quiet`` seconds."""
    seen: list[ClientEvent] = []
    while True:
        with trio.move_on_after(quiet):
            seen.append(await events.__anext__())
            continue
        return seen


async def test_get_pipeline_resyncs_shown_state(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        pipeline = await client.get_pipeline(S)
        assert set(pipeline["nodes"]) == {"bars", "pip", "comp"}
        assert client.shown(S, "comp") == server.params_of("comp")
        assert client.shown(S, "comp", VIEW_CHANNEL) == server.layout_of("comp")


async def test_tune_is_stamped_masked_and_acknowledged(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        stamp = await client.tune(S, "comp", {"layers": {"in_0": {"opacity": 0.5}}})
        assert stamp == Stamp(client.nonce, 1)
        assert server.params_of("comp")["layers"]["in_0"]["opacity"] == 0.5
        assert server.acks_of("comp") == {client.nonce: 1}
        # the event (before the success, same connection) carried the ack: nothing stays pending
        assert client.pending(S, "comp") == {}
        assert client.shown(S, "comp") == server.params_of("comp")
        second = await client.tune(S, "comp", {"fps": 25}, sync=False)
        assert second == Stamp(client.nonce, 2)
        await until(lambda: server.params_of("comp").get("fps") == 25)


async def test_refused_tune_raises_with_path_and_falls_back(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        before = client.shown(S, "comp")
        with pytest.raises(CompositordError) as caught:
            await client.tune(S, "comp", {"layers": {"in_0": {"opacity": 5}}})
        assert caught.value.code == "invalid_params"
        assert caught.value.path == "/payload/message/PatchParams/layers/in_0/opacity"
        assert caught.value.stamp == Stamp(client.nonce, 1)
        assert client.shown(S, "comp") == before == server.params_of("comp")
        assert server.acks_of("comp") == {client.nonce: 1}  # S6: refused, still processed


async def test_async_refusal_comes_back_through_the_correlation_id(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        events = client.events()
        await client.tune(S, "comp", {"width": 99999}, sync=False)
        assert client.shown(S, "comp")["width"] == 99999  # masked until the refusal arrives
        refusal = await events.__anext__()
        assert (refusal.name, refusal.node_id, refusal.payload["rev"]) == ("refused", "comp", 1)
        assert client.shown(S, "comp")["width"] == 1280
        assert client.pending(S, "comp") == {}


async def test_a_refusal_before_the_ack_of_an_earlier_edit_shows_that_edit(server: FakeServer) -> None:
    """The daemon paces events to the frame end and answers refusals at once (#18)."""
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        events = client.events()
        server.hold_events()
        await client.tune(S, "comp", {"layers": {"in_1": {"opacity": 0.25}}}, sync=False)  # rev 1, applied
        await client.tune(S, "comp", {"layers": {"in_1": {"opacity": 7}}}, sync=False)  # rev 2, refused
        refusal = await events.__anext__()
        assert (refusal.name, refusal.payload["rev"]) == ("refused", 2)
        assert refusal.shown["layers"]["in_1"]["opacity"] == 0.25, "the refusal uncovered the state before rev 1"
        assert client.pending(S, "comp") == {"/layers/in_1/opacity": [(1, 0.25)]}
        server.release_events()
        change = await events.__anext__()
        assert change.name == "nodeparamschanged" and change.payload["params"]["_acks"] == {client.nonce: 1}
        assert change.shown["layers"]["in_1"]["opacity"] == 0.25
        assert client.pending(S, "comp") == {}


async def test_replace_sends_update_params(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        await client.tune(S, "comp", {"width": 640, "height": 360}, replace=True)
        assert server.params_of("comp") == {"width": 640, "height": 360}
        assert client.shown(S, "comp") == {"width": 640, "height": 360}


async def test_own_stale_echoes_never_move_the_shown_value_back(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        events = client.events()
        values = [round(0.05 * i, 2) for i in range(1, 20)]
        server.hold_requests()  # every echo arrives after the whole drag was sent
        for value in values:  # a slider drag: no waiting for echoes
            await client.tune(S, "comp", {"layers": {"in_1": {"opacity": value}}}, sync=False)
        server.release_requests()
        changes = [e for e in await collect(events) if e.name == "nodeparamschanged"]
        echoed = [e.payload["params"]["layers"]["in_1"]["opacity"] for e in changes]
        assert echoed == values  # the server did echo every older value...
        seen = [e.shown["layers"]["in_1"]["opacity"] for e in changes]
        assert seen == [values[-1]] * len(values), "an echo of an older rev showed an older value"
        assert client.pending(S, "comp") == {}


async def test_other_clients_changes_arrive_while_mine_are_in_flight(server: FakeServer) -> None:
    async with open_client(server.url) as alice, open_client(server.url) as bob:
        await alice.get_pipeline(S)
        await bob.get_pipeline(S)
        bob_events = bob.events()
        await bob.tune(S, "comp", {"layers": {"in_0": {"opacity": 0.3}}}, sync=False)
        await alice.tune(S, "comp", {"layers": {"in_0": {"z_index": 7}}, "fps": 50})
        await collect(bob_events)
        shown = bob.shown(S, "comp")
        assert shown["fps"] == 50 and shown["layers"]["in_0"] == {"opacity": 0.3, "z_index": 7}
        assert shown == server.params_of("comp") == alice.shown(S, "comp")


async def test_layout_caused_by_the_server_reaches_the_last_editor(server: FakeServer) -> None:
    async with open_client(server.url) as editor, open_client(server.url) as other:
        await editor.get_pipeline(S)
        await editor.tune(S, "comp", {"layers": {"in_0": {"opacity": 0.9}}})
        events = editor.events()
        await collect(events)
        await other.connect(S, "pip", "out", "comp", "in_1")  # a new input: auto-PiP, no stamp
        views = [e for e in await collect(events) if e.name == "nodeviewdataupdated"]
        assert views and "_sender" not in views[-1].payload["data"]
        assert [layer["id"] for layer in editor.shown(S, "comp", VIEW_CHANNEL)["layers"]] == ["in_0", "in_1"]
        assert editor.shown(S, "comp", VIEW_CHANNEL) == server.layout_of("comp")


async def test_layer_rect_prediction_without_aspect_fit(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        patch = {"layers": {"in_0": {"aspect_fit": False, "rect": {"x": 50, "y": 40, "width": 320, "height": 200}}}}
        await client.tune(S, "comp", patch, sync=False)
        layer = client.shown(S, "comp", VIEW_CHANNEL)["layers"][0]
        assert (layer["x"], layer["y"], layer["width"], layer["height"]) == (50, 40, 320, 200)
        await until(lambda: client.pending(S, "comp", VIEW_CHANNEL) == {} and client.pending(S, "comp") == {})
        assert client.shown(S, "comp", VIEW_CHANNEL) == server.layout_of("comp")


async def test_reconnect_takes_a_new_nonce_resyncs_and_resends_pending(server: FakeServer) -> None:
    async with open_client(server.url, reconnect_delay=0.01) as client:
        await client.get_pipeline(S)
        first_nonce = client.nonce
        events = client.events()
        server.drop_before_next_tune = True  # the tune is lost in flight with the connection
        await client.tune(S, "comp", {"fps": 12}, sync=False)
        assert client.shown(S, "comp")["fps"] == 12
        await until(lambda: server.params_of("comp").get("fps") == 12)
        assert client.nonce != first_nonce
        assert any(e.name == RESYNCED for e in await collect(events))
        assert client.statistics().resent_messages == 1
        assert client.pending(S, "comp") == {}
        assert server.acks_of("comp") == {client.nonce: 1}  # S5: the old nonce left; revs restart at 1
        await client.tune(S, "comp", {"fps": 24})
        assert server.acks_of("comp") == {client.nonce: 2}


async def test_reconnect_does_not_resend_what_the_server_had_applied(server: FakeServer) -> None:
    """The ack of an applied tune is lost with the connection; another client then changes the value.

    Rule C4: the resync's ``retired_acks`` say the old nonce's rev 1 was processed, so the
    client does not re-send it (which would overwrite the other client's newer value).
    """
    async with (
        open_client(server.url) as other,
        open_client(server.url, reconnect_delay=0.01, reconnect_delay_max=0.05) as client,
    ):
        await client.get_pipeline(S)
        old_nonce = client.nonce
        server.refuse_connections = True  # the client stays out until the other client's tune has landed
        server.drop_after_next_tune = True
        await client.tune(S, "comp", {"fps": 12}, sync=False)
        await until(lambda: server.params_of("comp").get("fps") == 12)
        await until(lambda: not client.connected)
        assert client.shown(S, "comp")["fps"] == 12  # still masked while the client reconnects
        await other.tune(S, "comp", {"fps": 30})
        server.refuse_connections = False
        await until(lambda: client.nonce != old_nonce and client.connected)
        assert client.shown(S, "comp")["fps"] == 30
        assert client.statistics().resent_messages == 0
        assert server.params_of("comp")["fps"] == 30
        assert client.pending(S, "comp") == {}


async def test_sync_tune_cut_off_raises_connection_lost_and_is_still_resent(server: FakeServer) -> None:
    async with open_client(server.url, reconnect_delay=0.01) as client:
        await client.get_pipeline(S)
        server.drop_before_next_tune = True
        with pytest.raises(ConnectionLost):
            await client.tune(S, "comp", {"fps": 15})
        await until(lambda: server.params_of("comp").get("fps") == 15)
        await until(lambda: client.connected)
        assert client.shown(S, "comp") == server.params_of("comp")


async def test_resend_can_be_turned_off(server: FakeServer) -> None:
    async with open_client(server.url, reconnect_delay=0.01, resend_pending=False) as client:
        await client.get_pipeline(S)
        server.drop_before_next_tune = True
        await client.tune(S, "comp", {"fps": 12}, sync=False)
        await until(lambda: client.statistics().connections == 2 and client.connected)
        assert "fps" not in server.params_of("comp")
        assert client.shown(S, "comp") == server.params_of("comp")


async def test_requests_wait_for_the_reconnect(server: FakeServer) -> None:
    async with open_client(server.url, reconnect_delay=0.01) as client:
        await client.get_pipeline(S)
        await server.drop_connections()
        sessions = await client.list_sessions()  # waits for the new connection, then succeeds
        assert [s["session_id"] for s in sessions] == [S]
        assert client.statistics().connections == 2


async def test_events_end_when_reconnect_is_off(server: FakeServer) -> None:
    async with open_client(server.url, reconnect=False) as client:
        await server.drop_connections()
        with trio.fail_after(5):
            assert [e async for e in client.events()] == []
        with pytest.raises(Exception) as caught:
            await client.list_sessions()
        assert type(caught.value).__name__ == "ClientClosed"


async def test_bearer_token(nursery: trio.Nursery) -> None:
    server = await nursery.start(lambda task_status: fake_server.serve(token="s3cret", task_status=task_status))
    with pytest.raises(ConnectFailed) as caught:
        async with open_client(server.url, token="wrong"):
            pass
    assert caught.value.status == 401
    async with open_client(server.url, token="s3cret") as client:
        assert (await client.get_pipeline(S))["session_id"] == S


async def test_connect_failure_is_typed() -> None:
    with pytest.raises(ConnectFailed):
        async with open_client("ws://127.0.0.1:1/api/v1/control", connect_timeout=2):
            pass


async def test_session_and_graph_actions(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        pipeline = {"nodes": {"c": {"kind": "video::compositor", "params": {"width": 320, "height": 240}}}, "connections": []}
        session_id = await client.create_session("mine", pipeline)
        assert {s["session_id"] for s in await client.list_sessions()} == {S, session_id}
        await client.add_node(session_id, "bars", "video::colorbars", {"width": 320, "height": 240})
        await client.connect(session_id, "bars", "out", "c", "in_0")
        assert server.sessions[session_id].connections == [
            {"from_node": "bars", "from_pin": "out", "to_node": "c", "to_pin": "in_0"}
        ]
        applied = await client.apply_batch(
            session_id,
            [
                AddNode(session_id, "bars2", "video::colorbars", {"width": 320, "height": 240}),
                TuneNode(session_id, "c", PATCH, {"fps": 60}),  # stamped and masked by the client
            ],
        )
        assert applied == 2
        assert server.params_of("c", session_id)["fps"] == 60
        with pytest.raises(TypeError):  # batches are always atomic: there is no keyword to say otherwise
            await client.apply_batch(session_id, [], atomic=False)  # type: ignore[call-arg]  # the keyword under test is gone
        assert server.acks_of("c", session_id) == {client.nonce: 1}
        await client.disconnect(session_id, "bars", "out", "c", "in_0")
        await client.remove_node(session_id, "bars2")
        assert set(server.sessions[session_id].nodes) == {"c", "bars"}
        with pytest.raises(CompositordError) as caught:
            await client.remove_node(session_id, "nope")
        assert (caught.value.code, caught.value.path) == ("not_found", "/payload/node_id")
        await client.destroy_session(session_id)
        with pytest.raises(CompositordError) as caught:
            await client.get_pipeline(session_id)
        assert caught.value.code == "not_found"


async def test_refused_batch_drops_its_pending_values(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        with pytest.raises(CompositordError):
            await client.apply_batch(S, [TuneNode(S, "comp", PATCH, {"fps": 30}), TuneNode(S, "comp", PATCH, {"fps": 9999})])
        assert client.pending(S, "comp") == {}
        assert "fps" not in client.shown(S, "comp")
        assert server.acks_of("comp") == {client.nonce: 2}


async def test_event_buffer_is_bounded(server: FakeServer) -> None:
    async with open_client(server.url, event_buffer=4) as client, open_client(server.url) as other:
        await client.get_pipeline(S)
        for fps in range(10, 20):
            await other.tune(S, "comp", {"fps": fps})
        await until(lambda: client.shown(S, "comp").get("fps") == 19)
        assert client.statistics().events_dropped > 0
        kept = await collect(client.events())
        assert len(kept) == 4  # the oldest were dropped, the newest kept
        assert [e.shown["fps"] for e in kept if e.name == "nodeparamschanged"][-1] == 19


async def test_a_loop_over_waiting_events_lets_other_tasks_run_between_them() -> None:
    buffer = EventBuffer(16)
    for index in range(10):
        buffer.put_nowait(ClientEvent("e", {"i": index}))
    waiting_when_other_ran: list[int] = []

    async def other() -> None:
        waiting_when_other_ran.append(len(buffer))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        read = [event.payload["i"] async for event in _first(EventStream(buffer), 10)]
    assert read == list(range(10))
    # It ran at one of the first reads (trio may run either task first), not after the loop had drained the buffer.
    assert len(waiting_when_other_ran) == 1 and waiting_when_other_ran[0] >= 8


async def test_a_cancelled_wait_for_an_event_takes_none_out() -> None:
    buffer = EventBuffer(4)
    buffer.put_nowait(ClientEvent("e", {}))
    with trio.CancelScope() as scope:
        scope.cancel()
        await buffer.get()
    assert scope.cancelled_caught and len(buffer) == 1


async def _first(stream: EventStream, count: int) -> AsyncIterator[ClientEvent]:
    for _ in range(count):
        yield await stream.__anext__()


async def test_malformed_server_messages_are_counted_not_fatal(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        for connection in server.connections:
            await connection.ws.send_message("{not json")
            await connection.ws.send_message(serialize(Request("getpipeline", {"session_id": S})))
        await until(lambda: client.statistics().malformed_messages == 2)
        assert (await client.get_pipeline(S))["session_id"] == S


async def test_fake_server_refuses_a_replayed_stamp(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        stamp = await client.tune(S, "comp", {"fps": 20})
        replay = TuneNode(S, "comp", PATCH, {"fps": 21}, stamp)
        with pytest.raises(CompositordError) as caught:
            await client.apply_batch(S, [replay])
        assert caught.value.code == "conflict"
        assert server.params_of("comp")["fps"] == 20


async def test_fake_server_forgets_a_closed_connections_sender(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.tune(S, "comp", {"fps": 20})
        nonce = client.nonce
        assert nonce in server.acks_of("comp")
    await until(lambda: not server.connections)
    assert nonce not in server.acks_of("comp")


async def test_reconnect_gives_up_on_a_permanent_refusal(server: FakeServer) -> None:
    async with open_client(server.url, reconnect_delay=0.01) as client:
        server.token = "now-required"
        await server.drop_connections()
        with trio.fail_after(5):
            assert [e async for e in client.events()] == []
        with pytest.raises(ConnectFailed) as caught:
            await client.list_sessions()
        assert caught.value.status == 401


async def test_resync_forgets_a_session_that_went_away(server: FakeServer) -> None:
    async with open_client(server.url, reconnect_delay=0.01) as client:
        pipeline = {"nodes": {"c": {"kind": "video::compositor", "params": {}}}, "connections": []}
        session_id = await client.create_session("brief", pipeline)
        await client.get_pipeline(session_id)
        await client.get_pipeline(S)
        events = client.events()
        del server.sessions[session_id]  # gone while the client is away
        await server.drop_connections()
        resynced: list[ClientEvent] = []
        with trio.fail_after(5):
            while len(resynced) < 2:
                event = await events.__anext__()
                if event.name == RESYNCED:
                    resynced.append(event)
        gone = {e.session_id: e.payload.get("gone", False) for e in resynced}
        assert gone == {session_id: True, S: False}
        assert client.shown(session_id, "c") == {}  # forgotten: a fresh, empty state


async def test_malformed_pipeline_is_counted_and_changes_nothing(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        await client.get_pipeline(S)
        before = client.shown(S, "comp")
        bad = envelope.pipeline_response(None, session_id=S, nodes={"comp": {"kind": "x", "params": []}}, connections=[])
        for connection in server.connections:
            connection.send(bad)
        await until(lambda: client.statistics().malformed_messages == 1)
        assert client.shown(S, "comp") == before


async def test_malformed_answer_to_a_request_fails_that_request(server: FakeServer) -> None:
    async with open_client(server.url) as client:
        original = server._pipeline

        def broken(session: Any, correlation_id: str | None) -> envelope.Response:
            return envelope.pipeline_response(correlation_id, session_id=S, nodes={"comp": {"params": 3}}, connections=[])

        server._pipeline = broken  # type: ignore[method-assign]  # swapping the fake server's method for one test
        with pytest.raises(UnexpectedResponse):
            await client.get_pipeline(S)
        server._pipeline = original  # type: ignore[method-assign]  # swapping the fake server's method for one test
        assert (await client.get_pipeline(S))["session_id"] == S


async def test_request_timeout_is_typed_and_the_value_stays_masked(server: FakeServer) -> None:
    async with open_client(server.url, request_timeout=0.2) as client:
        await client.get_pipeline(S)
        server.hold_requests()
        with pytest.raises(RequestTimedOut):
            await client.tune(S, "comp", {"fps": 33})
        assert client.shown(S, "comp")["fps"] == 33  # not refused: it may still land
        server.release_requests()
        await until(lambda: client.pending(S, "comp") == {})
        assert server.params_of("comp")["fps"] == 33
