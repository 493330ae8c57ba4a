"""Batched, pre-framed writes (daemon/control/outgoing.py, daemon/control/websocket.py) against real
trio-websocket clients, and the write-through path of ``Connection.deliver``."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from compositord.daemon.control.connection import Connection, ConnectionLimits
from compositord.daemon.control.outgoing import Broadcast, frame_of, frame_text, text_of
from compositord.daemon.control.websocket import ConnectionClosed, ServerWebSocket
from compositord.protocol.errors import RemoteProtocolError
from compositord.protocol.message_head import MessageHead
from compositord.tests.websocket_peers import RawClient, serve_websockets


def _decode_frames(data: bytes) -> list[str]:
    """What a client's wsproto makes of ``data``: the text of each whole message."""
    client = WSConnection(ConnectionType.CLIENT)
    handshake = client.send(Request(host="localhost", target="/"))
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(handshake)
    list(server.events())
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    client.receive_data(data)
    messages: list[str] = []
    pieces: list[str] = []
    for event in client.events():
        assert isinstance(event, TextMessage), event
        pieces.append(event.data)
        if event.message_finished:
            messages.append("".join(pieces))
            pieces = []
    return messages


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300_000])
def test_a_frame_decodes_to_its_text_at_every_length_encoding(size: int) -> None:
    text = ("é" * size)[:size]  # two UTF-8 bytes per character: the length is in bytes, not characters
    assert _decode_frames(frame_text(text)) == [text]


def test_server_frames_are_unmasked_and_the_same_for_everyone() -> None:
    frame = frame_text('{"type":"event"}')
    assert frame[0] == 0x81  # FIN + text
    assert frame[1] & 0x80 == 0  # no mask bit: RFC 6455 5.1, a server never masks
    event = Broadcast('{"type":"event"}')
    assert event.frame() is event.frame() and event.frame() == frame  # framed once, shared
    assert frame_of(event) == frame_of('{"type":"event"}') and text_of(event) == '{"type":"event"}'


class _Echo:
    """A dispatcher that answers each text with the same text (through the mailbox, like a response)."""

    def connection_opened(self, connection: Connection) -> None: ...

    async def handle_text(self, connection: Connection, text: str) -> None:
        connection.send(text)

    def handle_binary(self, connection: Connection, data: bytes) -> None: ...

    def refuse(self, connection: Connection, error: RemoteProtocolError, head: MessageHead) -> None: ...

    def connection_closed(self, connection: Connection) -> None: ...


async def _serve(nursery: trio.Nursery, on_connection: Any) -> str:
    host, port = await serve_websockets(nursery, on_connection)
    return f"ws://{host}:{port}/"


async def test_a_connection_writes_what_is_queued_in_one_write_in_order() -> None:
    connections: list[Connection] = []

    async def on_connection(websocket: ServerWebSocket) -> None:
        connection = Connection(websocket, ConnectionLimits())
        connections.append(connection)
        # Queued before the sender runs: responses and fanned-out events interleaved.
        for i in range(200):
            connection.mailbox.put(f"response {i}" if i % 2 else Broadcast(f"event {i}"))
        await connection.run(_Echo())

    async with trio.open_nursery() as nursery:
        url = await _serve(nursery, on_connection)
        async with open_websocket_url(url) as ws:
            got = [await ws.get_message() for _ in range(200)]
            await ws.send_message("and an answer after it")
            assert await ws.get_message() == "and an answer after it"
        nursery.cancel_scope.cancel()
    assert got == [f"response {i}" if i % 2 else f"event {i}" for i in range(200)]
    assert connections[0].messages_sent == 201
    assert connections[0].writes <= 3  # the 200 queued ones in one write (or a few), not 200


async def test_send_frames_to_a_closed_connection_raises_connection_closed() -> None:
    outcome: list[BaseException] = []

    async def on_connection(websocket: ServerWebSocket) -> None:
        with trio.fail_after(5), pytest.raises(ConnectionClosed) as by_peer:
            await websocket.receive()  # the client's close frame: answered, then ConnectionClosed
        assert by_peer.value.code == 1000 and websocket.closed is not None
        assert websocket.try_write(frame_text("too late")) is None
        try:
            await websocket.send_frames(frame_text("too late"))
        except ConnectionClosed as exc:
            outcome.append(exc)

    async with trio.open_nursery() as nursery:
        url = await _serve(nursery, on_connection)
        async with open_websocket_url(url):
            pass  # closing waits for the server's answer to its close frame
        with trio.fail_after(5):
            while not outcome:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert isinstance(outcome[0], ConnectionClosed)


async def _connection_pair(
    nursery: trio.Nursery, limits: ConnectionLimits | None = None, **client_options: Any
) -> tuple[Connection, Any]:
    """A server-side Connection (running) and a trio-websocket client connected to it."""
    made: list[Connection] = []
    ready = trio.Event()

    async def on_connection(websocket: ServerWebSocket) -> None:
        connection = Connection(websocket, limits or ConnectionLimits())
        made.append(connection)
        ready.set()
        await connection.run(_Echo())

    url = await _serve(nursery, on_connection)
    client = await nursery.start(_hold_client, url, client_options)
    with trio.fail_after(5):
        await ready.wait()
    await trio.testing.wait_all_tasks_blocked()
    return made[0], client


async def _hold_client(url: str, options: dict[str, Any], *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    async with open_websocket_url(url, **options) as ws:
        task_status.started(ws)
        await trio.sleep_forever()


async def test_deliver_to_an_idle_connection_writes_at_once_without_its_sender() -> None:
    async with trio.open_nursery() as nursery:
        connection, client = await _connection_pair(nursery)
        writes = connection.writes
        connection.deliver([(None, "first"), (("s", "n", "view"), Broadcast("second"))])
        # No checkpoint since: had the messages been queued for the sender task, they would still be queued.
        assert len(connection.mailbox) == 0 and connection.writes == writes + 1
        assert [await client.get_message() for _ in range(2)] == ["first", "second"]
        nursery.cancel_scope.cancel()


async def test_a_message_delivered_to_an_idle_connection_is_on_the_socket_before_the_next_checkpoint() -> None:
    made: list[Connection] = []

    async def on_connection(websocket: ServerWebSocket) -> None:
        made.append(Connection(websocket, ConnectionLimits()))
        await made[-1].run(_Echo())

    async with trio.open_nursery() as nursery:
        client = await RawClient.connect(*await serve_websockets(nursery, on_connection))
        with trio.fail_after(5):
            while not made:
                await trio.sleep(0.01)
        await trio.testing.wait_all_tasks_blocked()  # the connection's sender waits on its empty mailbox
        connection = made[0]
        assert client.read_now() == []
        connection.deliver([(None, "first"), (("s", "n", "view"), Broadcast("second"))])
        # No checkpoint since deliver: no other task (the sender) can have run, so only a write made
        # inside deliver can have put the two messages on the socket.
        received = client.read_now(wait=2.0)
        received += client.read_now(wait=0.2) if len(received) < 2 else []
        assert [event.data for event in received if isinstance(event, TextMessage)] == ["first", "second"]
        assert len(connection.mailbox) == 0 and connection.writes == 1 and connection.messages_sent == 2
        await client.stream.aclose()
        nursery.cancel_scope.cancel()


async def test_what_the_socket_does_not_take_goes_first_and_whole() -> None:
    big = "x" * (24 * 1024 * 1024)  # more than a loopback socket buffers while nobody reads
    async with trio.open_nursery() as nursery:
        connection, client = await _connection_pair(nursery, max_message_size=64 * 1024 * 1024, message_queue_size=0)
        writes = connection.writes
        connection.deliver([(None, big)])
        assert connection.writes == writes + 1  # the socket took the first part at once, in deliver
        assert len(connection.mailbox) == 1  # the cut rest of the frame, queued for the sender
        connection.deliver([(("s", "n", "params"), Broadcast("after"))])
        connection.send("a response")
        assert len(connection.mailbox) == 3  # behind the rest, in order: never written before it
        with trio.fail_after(20):
            assert await client.get_message() == big
            assert [await client.get_message() for _ in range(2)] == ["after", "a response"]
        nursery.cancel_scope.cancel()


async def test_while_the_socket_is_full_events_wait_as_messages_and_coalesce() -> None:
    big = "x" * (24 * 1024 * 1024)
    async with trio.open_nursery() as nursery:
        # Two big messages wait: a byte bound above them (the default would rightly close this client).
        limits = ConnectionLimits(mailbox_bytes=64 * 1024 * 1024)
        connection, client = await _connection_pair(nursery, limits, max_message_size=64 * 1024 * 1024, message_queue_size=0)
        # The client takes in the first message and then waits to be asked for it: the second stays in the
        # socket, and the sender waits for room while holding the stream.
        connection.deliver([(None, big)])
        connection.deliver([(None, big)])
        await trio.testing.wait_all_tasks_blocked()
        queued = len(connection.mailbox)  # 0 or 1: the second message may wait behind the first's rest
        for n in range(5):
            connection.deliver([(("s", "n", "view"), Broadcast(f"view {n}"))])
        assert len(connection.mailbox) == queued + 1  # queued as messages, so the five coalesced to the latest
        with trio.fail_after(20):
            assert [len(await client.get_message()) for _ in range(2)] == [len(big)] * 2
            assert await client.get_message() == "view 4"
        nursery.cancel_scope.cancel()


def test_a_broadcast_variant_is_made_once_for_its_dialect_and_only_when_sent() -> None:
    made: list[str] = []

    def streamkit_shape() -> str:
        made.append("streamkit")
        return '{"shape":"streamkit"}'

    event = Broadcast.deferred(lambda: '{"shape":"own"}', {"streamkit": streamkit_shape})
    assert event.for_dialect(None) is event and event.for_dialect("other") is event
    assert made == [], "a variant is encoded only when a connection of its dialect sends it"
    variant = event.for_dialect("streamkit")
    assert variant is not None and variant is event.for_dialect("streamkit"), "made once, for every connection of the dialect"
    assert _decode_frames(variant.frame() + event.frame()) == ['{"shape":"streamkit"}', '{"shape":"own"}']
    variant.frame()
    assert made == ["streamkit"]
    plain = Broadcast("plain").for_dialect("streamkit")
    assert plain is not None and plain.text == "plain"


def test_an_event_for_one_dialect_only_is_nothing_for_the_others() -> None:
    only = Broadcast("streamkit only", only_for=frozenset({"streamkit"}))
    assert only.for_dialect(None) is None and only.for_dialect("other") is None
    assert only.for_dialect("streamkit") is only
