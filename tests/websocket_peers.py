"""Both ends of a WebSocket, below what trio-websocket's client lets a test do.

``serve_websockets``: a TCP server that upgrades each connection with the
daemon's own public pieces (``http.HttpConnection``, ``websocket.accept_upgrade``,
``websocket.ServerWebSocket``), the way ``server.ControlServer`` does, and hands
each ``ServerWebSocket`` to a callback. ``RawClient``: wsproto over a trio TCP
stream, so a test can send fragments, pings and plain HTTP, and read what is
on the socket already without a checkpoint (``read_now``).
"""

from __future__ import annotations

import os
import select
from collections.abc import Awaitable, Callable, Iterable
from functools import partial

import h11
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Event, Message, RejectConnection, Request

from compositord.daemon.control.http import HttpConnection
from compositord.daemon.control.websocket import ServerWebSocket, accept_upgrade

TIMEOUT = 10.0


async def serve_websockets(
    nursery: trio.Nursery,
    on_websocket: Callable[[ServerWebSocket], Awaitable[None]],
    *,
    max_text_bytes: int = 64 * 1024,
    max_binary_bytes: int = 32 * 1024 * 1024,
) -> tuple[str, int]:
    async def handler(stream: trio.SocketStream) -> None:
        http = HttpConnection(stream, read_timeout=TIMEOUT, write_timeout=TIMEOUT)
        request = await http.next_request()
        assert request is not None
        protocol, accepted = accept_upgrade(list(request.headers), request.target, [])
        await stream.send_all(accepted)
        websocket = ServerWebSocket(
            stream,
            protocol,
            max_text_bytes=max_text_bytes,
            max_binary_bytes=max_binary_bytes,
            control_timeout=2.0,
            trailing_data=http.trailing_data(),
        )
        await on_websocket(websocket)

    listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
    host, port = listeners[0].socket.getsockname()[:2]
    return str(host), int(port)


class RawClient:
    def __init__(self, stream: trio.SocketStream, protocol: WSConnection) -> None:
        self.stream = stream
        self.protocol = protocol
        self._pieces: list[str | bytes] = []

    @classmethod
    async def connect(cls, host: str, port: int, path: str = "/", headers: Iterable[tuple[bytes, bytes]] = ()) -> RawClient:
        """Open a WebSocket; raises AssertionError with the status when the server refuses."""
        stream = await trio.open_tcp_stream(host, port)
        protocol = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(protocol.send(Request(host=f"{host}:{port}", target=path, extra_headers=list(headers))))
        client = cls(stream, protocol)
        with trio.fail_after(TIMEOUT):
            while True:
                for event in await client._receive_events():
                    if isinstance(event, AcceptConnection):
                        return client
                    if isinstance(event, RejectConnection):
                        raise AssertionError(f"refused with {event.status_code}")

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stream.aclose()  # no close handshake: the server sees the stream end

    async def send(self, event: Event) -> None:
        await self.stream.send_all(self.protocol.send(event))

    async def _receive_events(self) -> list[Event]:
        data = await self.stream.receive_some(65536)
        self.protocol.receive_data(data or None)
        return list(self.protocol.events())

    async def next_event(self) -> Event:
        """The next event that is not a piece of a message (whole messages come back as ``Message``)."""
        with trio.fail_after(TIMEOUT):
            while True:
                for event in self._whole(await self._receive_events()):
                    return event

    def read_now(self, wait: float = 0.0) -> list[Event]:
        """The events of what the socket holds: one read, no trio checkpoint (no other task runs meanwhile).

        ``wait``: seconds to wait for the first byte, blocking this thread (loopback hands the bytes of
        a write over to the reader's socket at once, but on a loaded machine a little later).
        """
        descriptor = self.stream.socket.fileno()
        readable, _, _ = select.select([descriptor], [], [], wait)
        if not readable:
            return []
        try:
            data = os.read(descriptor, 1 << 20)
        except BlockingIOError:
            return []
        self.protocol.receive_data(data or None)
        return list(self._whole(self.protocol.events()))

    def _whole(self, events: Iterable[Event]) -> Iterable[Event]:
        for event in events:
            if isinstance(event, Message):
                self._pieces.append(event.data)
                if not event.message_finished:
                    continue
                data: str | bytes = (
                    "".join(p for p in self._pieces if isinstance(p, str))
                    if isinstance(event.data, str)
                    else b"".join(p for p in self._pieces if isinstance(p, bytes))
                )
                self._pieces = []
                yield type(event)(data=data)
            else:
                yield event


async def plain_http(host: str, port: int, requests: list[h11.Request]) -> list[tuple[h11.Response, bytes]]:
    """Send ``requests`` one after the other on one kept-alive connection; each answer with its body."""
    stream = await trio.open_tcp_stream(host, port)
    protocol = h11.Connection(h11.CLIENT)
    answers: list[tuple[h11.Response, bytes]] = []
    with trio.fail_after(TIMEOUT):
        for request in requests:
            if protocol.our_state is h11.DONE:
                protocol.start_next_cycle()
            await stream.send_all(protocol.send(request) + protocol.send(h11.EndOfMessage()))
            response: h11.Response | None = None
            body = b""
            while True:
                event = protocol.next_event()
                if event is h11.NEED_DATA:
                    protocol.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Response):
                    response = event
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
                else:
                    raise AssertionError(f"unexpected {event!r}")
            assert response is not None
            answers.append((response, body))
    await stream.aclose()
    return answers
