"""The handshake of PROTOCOL.md section 1: path, bearer token, Origin, connection limit, version header;
and the limits a connected client meets (text size, binary size, rate).

The session logic is replaced by a small echo dispatcher: these checks happen
before any message reaches it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url
from wsproto.events import BytesMessage, CloseConnection, TextMessage

from compositord.daemon.control.connection import Connection, ConnectionLimits
from compositord.daemon.control.server import CONTROL_PATH, ControlServer, ServerOptions, check_handshake
from compositord.protocol.errors import RemoteProtocolError
from compositord.protocol.message_head import MessageHead
from compositord.tests.websocket_peers import RawClient


class EchoDispatcher:
    def __init__(self) -> None:
        self.closed: list[Connection] = []

    def connection_opened(self, connection: Connection) -> None:
        pass

    async def handle_text(self, connection: Connection, text: str) -> None:
        if text.startswith("big:"):
            connection.send("x" * int(text[4:]))
            return
        connection.send(json.dumps({"echo": text}))

    def handle_binary(self, connection: Connection, data: bytes) -> None:
        connection.send(json.dumps({"binary": len(data)}))

    def refuse(self, connection: Connection, error: RemoteProtocolError, head: MessageHead) -> None:
        connection.send(json.dumps({"payload": error.to_payload(), "correlation_id": head.correlation_id}))

    def connection_closed(self, connection: Connection) -> None:
        self.closed.append(connection)


@asynccontextmanager
async def running_server(
    dispatcher: EchoDispatcher | None = None, **overrides: object
) -> AsyncIterator[tuple[str, ControlServer]]:
    options = ServerOptions(host="127.0.0.1", port=0, **overrides)  # type: ignore[arg-type]  # a wrong type on purpose: the check under test
    server = ControlServer(options, dispatcher or EchoDispatcher())
    async with trio.open_nursery() as nursery:
        host, port = await nursery.start(server.run)
        yield f"ws://{host}:{port}", server
        nursery.cancel_scope.cancel()


async def rejected_status(url: str, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, extra_headers=headers or [], connect_timeout=5):
            pass
    return info.value.status_code


async def test_accepts_on_the_control_path_with_the_protocol_header() -> None:
    async with running_server() as (base, _):
        async with open_websocket_url(base + CONTROL_PATH) as ws:
            assert (b"x-compositord-protocol", b"1") in [(k.lower(), v) for k, v in ws.handshake_headers]
            await ws.send_message("hello")
            assert json.loads(await ws.get_message()) == {"echo": "hello"}


async def test_other_paths_are_404() -> None:
    async with running_server() as (base, _):
        assert await rejected_status(base + "/api/v2/control") == 404
        assert await rejected_status(base + "/") == 404


async def test_token_required_401_before_any_message() -> None:
    async with running_server(token="s3cret") as (base, _):
        url = base + CONTROL_PATH
        assert await rejected_status(url) == 401
        assert await rejected_status(url, [(b"Authorization", b"Bearer wrong")]) == 401
        assert await rejected_status(url + "?token=wrong") == 401
        assert await rejected_status(url, [(b"Authorization", b"Basic s3cret")]) == 401
        async with open_websocket_url(url, extra_headers=[(b"Authorization", b"Bearer s3cret")]) as ws:
            await ws.send_message("a")
            assert json.loads(await ws.get_message()) == {"echo": "a"}
        async with open_websocket_url(url + "?token=s3cret") as ws:
            await ws.send_message("b")
            assert json.loads(await ws.get_message()) == {"echo": "b"}


async def test_origin_allowlist_403_and_no_origin_allowed() -> None:
    async with running_server(allowed_origins=frozenset({"http://ok.example"})) as (base, _):
        url = base + CONTROL_PATH
        assert await rejected_status(url, [(b"Origin", b"http://evil.example")]) == 403
        async with open_websocket_url(url, extra_headers=[(b"Origin", b"http://ok.example")]):
            pass
        async with open_websocket_url(url):  # a non-browser client sends no Origin
            pass


async def test_connection_limit_refuses_with_503() -> None:
    async with running_server(max_connections=2) as (base, server):
        url = base + CONTROL_PATH
        async with open_websocket_url(url), open_websocket_url(url):
            assert await rejected_status(url) == 503
        with trio.fail_after(5):
            while server.connections:
                await trio.sleep(0.01)
        async with open_websocket_url(url):
            pass


async def raw_upgrade(port: int, go: trio.Event, accepted: list[trio.SocketStream], refused: list[int]) -> None:
    """One upgrade request on a plain socket, sent once ``go`` is set; an accepted stream is kept open."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await go.wait()
    await stream.send_all(
        f"GET {CONTROL_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    with trio.fail_after(10):
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(4096)
            assert chunk, "the server closed without an answer"
            head += chunk
    status = int(head.split(b" ", 2)[1])
    if status == 101:
        accepted.append(stream)
    else:
        refused.append(status)
        await stream.aclose()


async def test_the_connection_limit_holds_exactly_when_handshakes_arrive_together() -> None:
    """The limit counted connections only once their 101 was written: handshakes arriving together all
    passed the check while the first ones were being answered (258 accepted with a limit of 256)."""
    async with running_server(max_connections=3) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        accepted: list[trio.SocketStream] = []
        refused: list[int] = []
        go = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(24):
                nursery.start_soon(raw_upgrade, port, go, accepted, refused)
            await trio.testing.wait_all_tasks_blocked()  # every socket connected: the requests arrive together
            go.set()
        assert (len(accepted), refused) == (3, [503] * 21)
        with trio.fail_after(5):
            while len(server.connections) < 3:
                await trio.sleep(0.01)
        assert len(server.connections) == 3
        for stream in accepted:
            await stream.aclose()


async def test_text_over_limit_gets_too_large_and_the_connection_stays_open() -> None:
    limits = ConnectionLimits(max_text_bytes=1000)
    async with running_server(limits=limits) as (base, _):
        async with open_websocket_url(base + CONTROL_PATH) as ws:
            await ws.send_message("é" * 600)  # 600 characters, 1200 bytes
            reply = json.loads(await ws.get_message())
            assert reply["payload"]["code"] == "too_large"
            await ws.send_message("small")
            assert json.loads(await ws.get_message()) == {"echo": "small"}


async def test_binary_over_limit_closes_with_1009() -> None:
    async with running_server(max_binary_bytes=10_000) as (base, _):
        async with open_websocket_url(base + CONTROL_PATH, max_message_size=100_000) as ws:
            await ws.send_message(b"\0" * 5_000)
            assert json.loads(await ws.get_message()) == {"binary": 5000}
            await ws.send_message(b"\0" * 20_000)
            with pytest.raises(ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason is not None and info.value.reason.code == 1009


async def test_rate_limit_answers_rate_limited_with_the_correlation_id() -> None:
    limits = ConnectionLimits(messages_per_second=5)
    async with running_server(limits=limits) as (base, _):
        async with open_websocket_url(base + CONTROL_PATH) as ws:
            for i in range(8):
                await ws.send_message(json.dumps({"type": "request", "correlation_id": f"c{i}", "payload": {}}))
            replies = [json.loads(await ws.get_message()) for _ in range(8)]
            limited = [r for r in replies if "payload" in r and r["payload"].get("code") == "rate_limited"]
            assert len(limited) >= 2
            assert all(r["correlation_id"].startswith("c") for r in limited)


def test_check_handshake_is_pure_and_names_the_reason() -> None:
    options = ServerOptions(token="t")
    refusal = check_handshake("/api/v1/control", [], options, 0)
    assert refusal is not None and refusal.status == 401
    assert check_handshake("/api/v1/control?token=t", [(b"authorization", b"Bearer t")], options, 0) is None
    # the header, when present, is the one that counts
    refusal = check_handshake("/api/v1/control?token=t", [(b"authorization", b"Bearer x")], options, 0)
    assert refusal is not None and refusal.status == 401


@pytest.mark.parametrize(
    ("capacity", "mailbox_bytes", "expected"),
    [(4096, 64 << 20, "send timed out"), (4, 64 << 20, "messages waiting"), (4096, 4 << 20, "bytes waiting")],
    ids=["send-timeout", "mailbox-full", "mailbox-bytes"],
)
async def test_a_client_that_does_not_read_is_closed_with_1008(capacity: int, mailbox_bytes: int, expected: str) -> None:
    dispatcher = EchoDispatcher()
    limits = ConnectionLimits(send_timeout=0.3, mailbox_capacity=capacity, mailbox_bytes=mailbox_bytes, max_text_bytes=1000)
    async with running_server(dispatcher, limits=limits) as (base, _):
        async with open_websocket_url(base + CONTROL_PATH, max_message_size=64 * 1024 * 1024) as ws:
            # ~40 MB of answers that this client never reads: socket buffers fill, the sender blocks
            for _ in range(40):
                await ws.send_message("big:1000000")
            with trio.fail_after(10):
                while not dispatcher.closed:
                    await trio.sleep(0.05)
            (closed,) = dispatcher.closed
            assert closed.close_code == 1008
            assert expected in closed.close_reason


async def wait_held(server: ControlServer, count: int) -> None:
    with trio.fail_after(5):
        while server.partial_messages.held != count:
            await trio.sleep(0.01)


async def test_messages_still_arriving_share_one_budget_and_give_it_back() -> None:
    """Each connection may hold a message of up to max_binary_bytes while it arrives; together they hold at most
    max_partial_bytes (else 256 connections could hold 8 GiB): past it, the connection that would pass it is closed
    with 1009, and a connection gives back what it held when its message ends or it closes."""
    async with running_server(max_partial_bytes=3_000_000) as (base, server):
        host, port = base.removeprefix("ws://").rsplit(":", 1)
        async with await RawClient.connect(host, int(port), CONTROL_PATH) as first:
            await first.send(BytesMessage(b"\1" * 1_600_000, message_finished=False))
            await wait_held(server, 1_600_000)
            async with await RawClient.connect(host, int(port), CONTROL_PATH) as second:
                await second.send(BytesMessage(b"\2" * 1_600_000, message_finished=False))
                closed = await second.next_event()
                assert isinstance(closed, CloseConnection) and closed.code == 1009
            await wait_held(server, 1_600_000)  # the refused connection holds nothing
            await first.send(BytesMessage(b"\1" * 10, message_finished=True))
            answer = await first.next_event()
            assert isinstance(answer, TextMessage) and json.loads(answer.data) == {"binary": 1_600_010}
            await wait_held(server, 0)
            await first.send(BytesMessage(b"\1" * 2_900_000, message_finished=False))
            await wait_held(server, 2_900_000)
            trims = server.partial_messages.trims
        await wait_held(server, 0)  # the stream ended: a message that will never finish gives its bytes back
        if server.partial_messages.gives_memory_back:  # and the pages go back to the system (glibc)
            with trio.fail_after(5):
                while server.partial_messages.trims == trims:
                    await trio.sleep(0.01)
