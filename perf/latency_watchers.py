"""The watching clients of control_latency, in a process of their own.

``python -m compositord.perf.latency_watchers URL COUNT`` opens COUNT WebSocket connections to URL,
prints ``CONNECTED <n>`` once every handshake is done (the bench starts its edits only then: a
connection storm during the edits would be measured as latency), and reads every message on each,
parsing each with the protocol's parser, until its standard input is closed. Then it prints one JSON
line: events read, the time from a frame's end to its view data being read (as the editing clients
measure it), and the CPU this process used.

Why a process and a lean client: in deployment the watchers of a compositor are other machines
(operators' consoles, tally displays). On this 2-core machine they share the CPU with the daemon,
and with 90 of them in the editing clients' process their per-message work (trio-websocket's reader
task and memory channel per message) delayed the editors' own reads, so the editors' latencies
measured the harness more than the daemon. Here each watcher is a TCP stream plus wsproto: one
``receive_some`` of up to 64 KiB yields every frame in it. Every message is still decoded
(see below), and how late the watchers read is part of the result, so a backlog on their side
shows instead of hiding. Each message is decoded with ``json.loads`` and its envelope checked
(``message_from_json``), as a browser console would (``JSON.parse``); the protocol's strict parser
(duplicate keys, number ranges: a server's guard against untrusted input) took twice as long per event
and, for 90 watchers, a third of a core that the daemon could not use.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from compositord.perf.measure import percentiles


async def _watch(url: str, record: dict[str, Any], all_connected: Any) -> None:
    import trio
    from wsproto import ConnectionType, WSConnection
    from wsproto.events import AcceptConnection, CloseConnection, Message, Ping, RejectConnection, Request

    from compositord.protocol.envelope import Event, message_from_json

    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    connection = WSConnection(ConnectionType.CLIENT)
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    pieces: list[str] = []
    async with stream:
        await stream.send_all(connection.send(Request(host=parts.netloc, target=parts.path or "/")))
        while True:
            data = await stream.receive_some(1 << 16)
            if not data:
                return
            connection.receive_data(data)
            for event in connection.events():
                if isinstance(event, Message):
                    pieces.append(event.data)  # text: the daemon sends no binary
                    if not event.message_finished:
                        continue
                    message = message_from_json(json.loads("".join(pieces)))
                    pieces.clear()
                    record["events"] += 1
                    if isinstance(message, Event) and message.event == "nodeviewdataupdated":
                        stamp = message.payload.get("timestamp")
                        if isinstance(stamp, (int, float)):
                            record["view_delivery_ms"].append((time.time() - stamp) * 1000.0)
                elif isinstance(event, Ping):
                    await stream.send_all(connection.send(event.response()))
                elif isinstance(event, (CloseConnection, RejectConnection)):
                    record["closed"] += 1
                    return
                elif isinstance(event, AcceptConnection):
                    record["connected"] += 1
                    if record["connected"] == record["count"]:
                        all_connected.set()


async def _watch_all(url: str, count: int) -> dict[str, Any]:
    import trio

    record: dict[str, Any] = {"count": count, "events": 0, "connected": 0, "closed": 0, "view_delivery_ms": []}
    all_connected = trio.Event()
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(_watch, url, record, all_connected)
        with trio.fail_after(60):
            await all_connected.wait()
        print(f"CONNECTED {record['connected']}", flush=True)
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)  # until the bench closes it
        nursery.cancel_scope.cancel()
    return record


def main(argv: list[str]) -> int:
    import resource

    import trio

    url, count = argv[0], int(argv[1])
    record = trio.run(_watch_all, url, count)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    delivery = record.pop("view_delivery_ms")
    summary = {
        **record,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "nice": os.nice(0),
        "view_delivery_ms": percentiles(delivery),
    }
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
