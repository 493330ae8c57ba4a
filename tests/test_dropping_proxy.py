"""The test proxy (testing/dropping_proxy.py) that the reconnect tests, the history checker and the soak rely on."""

from __future__ import annotations

import trio

from compositord.testing.dropping_proxy import DroppingProxy


async def _echo(stream: trio.SocketStream) -> None:
    async with stream:
        async for chunk in stream:
            await stream.send_all(chunk)


async def _round_trip(stream: trio.SocketStream, data: bytes) -> bytes:
    await stream.send_all(data)
    with trio.fail_after(5):
        return await stream.receive_some(100)


async def test_drop_one_cuts_the_oldest_connection_and_drop_all_the_rest() -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, _echo, 0)
        proxy = DroppingProxy(listeners[0].socket.getsockname()[1])
        await nursery.start(proxy.run)
        first = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        assert await _round_trip(first, b"one") == b"one"
        second = await trio.open_tcp_stream("127.0.0.1", proxy.port)
        assert await _round_trip(second, b"two") == b"two"
        assert proxy.connections == 2

        assert proxy.drop_one()
        with trio.fail_after(5):
            assert await first.receive_some(100) == b""  # cut: the stream ends, no data
        assert await _round_trip(second, b"still") == b"still"

        proxy.drop_all()
        with trio.fail_after(5):
            assert await second.receive_some(100) == b""
        assert not proxy.drop_one()
        nursery.cancel_scope.cancel()
