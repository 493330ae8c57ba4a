"""The daemon's own HTTP and WebSocket layer (daemon/control/http.py, router.py, websocket.py, server.py),
seen from raw peers: plain HTTP on the WebSocket's port, fragments counted as they arrive, pings, the
close handshake and peers that break the protocol.

The clients here are made of h11 and wsproto (tests/websocket_peers.py), so they can do what
trio-websocket's client never does: send a message in fragments, stop in the middle of one, ping.
"""

from __future__ import annotations

import json
import socket
import struct

import h11
import pytest
import trio
from trio_websocket import open_websocket_url
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage

from compositord.daemon.control.connection import ConnectionLimits
from compositord.daemon.control.websocket import MessageRefused, ServerWebSocket
from compositord.protocol.envelope import CONTROL_PATH, PROTOCOL_HEADER
from compositord.tests.test_server_handshake import EchoDispatcher, running_server
from compositord.tests.websocket_peers import RawClient, plain_http, serve_websockets


def _address(base: str) -> tuple[str, int]:
    host, port = base.removeprefix("ws://").rsplit(":", 1)
    return host, int(port)


def _get(path: str, method: bytes = b"GET", headers: list[tuple[bytes, bytes]] | None = None) -> h11.Request:
    return h11.Request(method=method, target=path, headers=[(b"host", b"localhost"), *(headers or [])])


def _header(response: h11.Response, name: bytes) -> bytes | None:
    return next((value for key, value in response.headers if key == name.lower()), None)


async def test_plain_http_gets_clean_answers_on_the_websocket_port() -> None:
    async with running_server() as (base, _):
        host, port = _address(base)
        answers = await plain_http(
            host,
            port,
            [
                _get("/"),
                _get("/metrics?x=1"),
                _get(CONTROL_PATH),
                _get(CONTROL_PATH, b"POST"),
                _get("/", b"HEAD"),
            ],
        )  # all on one kept-alive connection
        statuses = [response.status_code for response, _ in answers]
        assert statuses == [404, 404, 426, 405, 404]
        for response, body in answers[:4]:
            assert _header(response, b"content-type") == b"text/plain; charset=utf-8"
            assert _header(response, b"content-length") == str(len(body)).encode()
            assert body.endswith(b"\n") and len(body) < 200
            assert _header(response, PROTOCOL_HEADER.encode()) == b"1"
        assert b"/metrics" in answers[1][1]
        assert _header(answers[2][0], b"upgrade") == b"websocket"
        assert _header(answers[3][0], b"allow") == b"GET, HEAD"
        head, head_body = answers[4]
        assert head_body == b"" and int(_header(head, b"content-length") or 0) > 0  # the length, not the body
        # The same port still speaks WebSocket.
        async with open_websocket_url(base + CONTROL_PATH) as ws:
            await ws.send_message("after http")
            assert json.loads(await ws.get_message()) == {"echo": "after http"}


async def test_what_is_not_http_gets_400_and_the_server_keeps_serving() -> None:
    async with running_server() as (base, _):
        host, port = _address(base)
        stream = await trio.open_tcp_stream(host, port)
        await stream.send_all(b"\x16\x03\x01\x02\x00 not http at all\r\n\r\n")  # a TLS hello, say
        with trio.fail_after(5):
            answer = b""
            while chunk := await stream.receive_some(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert (await plain_http(host, port, [_get("/")]))[0][0].status_code == 404


async def test_an_upgrade_without_the_websocket_headers_is_400() -> None:
    async with running_server() as (base, _):
        host, port = _address(base)
        (response, body), *_ = await plain_http(host, port, [_get(CONTROL_PATH, headers=[(b"upgrade", b"websocket")])])
        assert response.status_code == 400 and b"Connection: Upgrade" in body
        assert _header(response, PROTOCOL_HEADER.encode()) == b"1"


async def test_a_ping_gets_a_pong_with_its_payload() -> None:
    async with running_server() as (base, _):
        async with await RawClient.connect(*_address(base), CONTROL_PATH) as client:
            await client.send(Ping(b"are you there"))
            assert await client.next_event() == Pong(b"are you there")
            await client.send(TextMessage("still answering"))
            reply = await client.next_event()
            assert isinstance(reply, TextMessage) and json.loads(reply.data) == {"echo": "still answering"}


async def test_fragments_make_one_message() -> None:
    async with running_server() as (base, _):
        async with await RawClient.connect(*_address(base), CONTROL_PATH) as client:
            for piece in ("frag", "men", "ted"):
                await client.send(TextMessage(piece, message_finished=piece == "ted"))
            reply = await client.next_event()
            assert isinstance(reply, TextMessage) and json.loads(reply.data) == {"echo": "fragmented"}
            await client.send(BytesMessage(b"\0" * 70_000, message_finished=False))
            await client.send(BytesMessage(b"\0" * 70_000))
            reply = await client.next_event()
            assert isinstance(reply, TextMessage) and json.loads(reply.data) == {"binary": 140_000}


async def test_a_binary_message_over_the_limit_is_refused_with_1009_before_it_is_complete() -> None:
    dispatcher = EchoDispatcher()
    async with running_server(dispatcher, max_binary_bytes=10_000) as (base, _):
        async with await RawClient.connect(*_address(base), CONTROL_PATH) as client:
            for _ in range(3):  # 12,000 bytes so far, and the message is not finished
                await client.send(BytesMessage(b"\1" * 4_000, message_finished=False))
            closing = await client.next_event()
            assert isinstance(closing, CloseConnection) and closing.code == 1009
            await client.send(closing.response())
            with trio.fail_after(5):
                while not dispatcher.closed:
                    await trio.sleep(0.01)
            assert dispatcher.closed[0].close_code == 1009
            assert "binary message over 10000 bytes" in dispatcher.closed[0].close_reason


async def test_a_text_message_over_the_limit_is_answered_before_it_is_complete_and_skipped() -> None:
    async with running_server(limits=ConnectionLimits(max_text_bytes=1000)) as (base, _):
        async with await RawClient.connect(*_address(base), CONTROL_PATH) as client:
            await client.send(TextMessage("é" * 300, message_finished=False))  # 600 bytes: under the limit
            await client.send(TextMessage("é" * 300, message_finished=False))  # 1200: over it, message unfinished
            refusal = await client.next_event()
            assert isinstance(refusal, TextMessage)
            assert json.loads(refusal.data)["payload"]["code"] == "too_large"
            await client.send(TextMessage("x" * 5000))  # the rest of the refused message: skipped, not echoed
            await client.send(TextMessage("next"))
            reply = await client.next_event()
            assert isinstance(reply, TextMessage) and json.loads(reply.data) == {"echo": "next"}


async def test_a_skipped_text_message_is_still_bounded_by_the_largest_message_read() -> None:
    async with running_server(limits=ConnectionLimits(max_text_bytes=1000), max_binary_bytes=20_000) as (base, _):
        async with await RawClient.connect(*_address(base), CONTROL_PATH) as client:
            await client.send(TextMessage("x" * 2000, message_finished=False))
            refusal = await client.next_event()
            assert isinstance(refusal, TextMessage) and json.loads(refusal.data)["payload"]["code"] == "too_large"
            for _ in range(10):  # 22,000 bytes in all, never finished
                await client.send(TextMessage("x" * 2000, message_finished=False))
            closing = await client.next_event()
            assert isinstance(closing, CloseConnection) and closing.code == 1009


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\x81\x82abcd" + bytes(b ^ m for b, m in zip(b"\xff\xfe", b"ab", strict=True)), 1007),  # text that is not UTF-8
        (b"\x83\x80abcd", 1002),  # opcode 3 is reserved
        (b"\x01\x80abcd\x02\x80abcd", 1002),  # a binary frame inside an unfinished text message
    ],
    ids=["bad-utf8", "reserved-opcode", "interleaved-messages"],
)
async def test_a_peer_that_breaks_the_protocol_is_closed_with_wsprotos_code(raw: bytes, code: int) -> None:
    dispatcher = EchoDispatcher()
    async with running_server(dispatcher) as (base, _):
        async with await RawClient.connect(*_address(base), CONTROL_PATH) as client:
            await client.stream.send_all(raw)  # masked frames (key "abcd") made by hand
            closing = await client.next_event()
            assert isinstance(closing, CloseConnection) and closing.code == code
            await client.send(closing.response())
            with trio.fail_after(5):
                while not dispatcher.closed:
                    await trio.sleep(0.01)
            assert dispatcher.closed[0].close_code == code


async def test_the_close_handshake_both_ways() -> None:
    dispatcher = EchoDispatcher()
    async with running_server(dispatcher) as (base, server):
        # The client closes: the server answers with the same code, then ends the stream.
        async with await RawClient.connect(*_address(base), CONTROL_PATH) as client:
            await client.send(CloseConnection(4000, "bye"))
            answer = await client.next_event()
            assert isinstance(answer, CloseConnection) and (answer.code, answer.reason) == (4000, "bye")
            with trio.fail_after(5):
                assert await client.stream.receive_some(100) == b""
        # The server closes (shutting down): 1001, and it waits for the client's answer.
        async with await RawClient.connect(*_address(base), CONTROL_PATH) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.close_all)
                closing = await client.next_event()
                assert isinstance(closing, CloseConnection) and closing.code == 1001
                await trio.sleep(0.1)
                assert server.connections  # still waiting for the answer
                await client.send(closing.response())
            assert not server.connections
            assert [c.close_code for c in dispatcher.closed] == [None, 1001]  # None: the peer closed, not this side


async def test_a_refused_stream_stays_refused_and_closing_survives_a_peer_that_reset() -> None:
    outcome: list[str] = []

    async def on_websocket(websocket: ServerWebSocket) -> None:
        with pytest.raises(MessageRefused) as first:
            await websocket.receive()
        await reset.wait()
        with trio.fail_after(2), pytest.raises(MessageRefused) as again:
            await websocket.receive()  # nothing after a refusal is parsed: refused again, not read forever
        assert again.value is first.value and first.value.code == 1009
        with trio.fail_after(5):
            await websocket.aclose(first.value.code, first.value.reason, timeout=2.0)  # must not raise
        assert websocket.closed is not None and websocket.try_write(b"x") is None
        outcome.append("closed")

    reset = trio.Event()
    async with trio.open_nursery() as nursery:
        host, port = await serve_websockets(nursery, on_websocket, max_binary_bytes=1000)
        client = await RawClient.connect(host, port)
        await client.send(BytesMessage(b"\0" * 2000))
        # A reset, not a FIN: writes to it fail at once.
        client.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        await client.stream.aclose()
        reset.set()
        with trio.fail_after(10):
            while not outcome:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n", 431),  # no end of head in 16 KiB
        (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"b" * 100_000, 413),  # a body past 64 KiB
    ],
    ids=["head", "body"],
)
async def test_requests_are_read_within_bounds(raw: bytes, status: int) -> None:
    async with running_server() as (base, _):
        stream = await trio.open_tcp_stream(*_address(base))
        with trio.fail_after(5):
            await stream.send_all(raw)
            answer = b""
            while chunk := await stream.receive_some(4096):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:100]  # read whole: the server drained, no reset
