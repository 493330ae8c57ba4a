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
measured the harness more than the daemon. Here each watcher is a non-blocking socket plus wsproto, and
one ``selectors`` loop serves them all: one ``recv`` of up to 64 KiB yields every frame in it. The
first version ran a trio task per watcher; its scheduling for 90 connections woken 60 times a second
cost this process a quarter of its CPU (0.55 of a core at (100, 10), now 0.35-0.44). Every message is still decoded
(see below), and how late the watchers read is part of the result, so a backlog on their side
shows instead of hiding. Each message is decoded with ``json.loads`` and its envelope checked
(``message_from_json``), as a browser console would (``JSON.parse``); the protocol's strict parser
(duplicate keys, number ranges: a server's guard against untrusted input) took twice as long per event
and, for 90 watchers, a third of a core that the daemon could not use.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from compositord.perf.measure import percentiles


class _Watcher:
    """One connection: a non-blocking socket and its wsproto state machine."""

    def __init__(self, url: str, record: dict[str, Any]) -> None:
        from wsproto import ConnectionType, WSConnection
        from wsproto.events import Request

        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        self.record = record
        self.connection = WSConnection(ConnectionType.CLIENT)
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
        self.sock.sendall(self.connection.send(Request(host=parts.netloc, target=parts.path or "/")))
        self.sock.setblocking(False)
        self.pieces: list[str] = []
        self.open = True

    def on_readable(self) -> None:
        """Read everything the socket holds and handle every message in it."""
        from wsproto.events import AcceptConnection, CloseConnection, Message, Ping, RejectConnection

        from compositord.protocol.envelope import Event, message_from_json

        while True:
            try:
                data = self.sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:
                data = b""
            if not data:
                self.open = False  # what came before the end is still handled below
                break
            self.connection.receive_data(data)
            if len(data) < 1 << 16:
                break
        record = self.record
        for event in self.connection.events():
            if isinstance(event, Message):
                self.pieces.append(event.data)  # text: the daemon sends no binary
                if not event.message_finished:
                    continue
                message = message_from_json(json.loads("".join(self.pieces)))
                self.pieces.clear()
                record["events"] += 1
                if isinstance(message, Event) and message.event == "nodeviewdataupdated":
                    stamp = message.payload.get("timestamp")
                    if isinstance(stamp, (int, float)):
                        record["view_delivery_ms"].append((time.time() - stamp) * 1000.0)
            elif isinstance(event, Ping):
                self.sock.setblocking(True)  # a pong is a few bytes: it goes at once
                self.sock.sendall(self.connection.send(event.response()))
                self.sock.setblocking(False)
            elif isinstance(event, (CloseConnection, RejectConnection)):
                record["closed"] += 1
                self.open = False
                return
            elif isinstance(event, AcceptConnection):
                record["connected"] += 1


def _watch_all(url: str, count: int) -> dict[str, Any]:
    """Connect ``count`` watchers, say so once all are connected, and read until standard input closes."""
    record: dict[str, Any] = {"count": count, "events": 0, "connected": 0, "closed": 0, "view_delivery_ms": []}
    watchers = [_Watcher(url, record) for _ in range(count)]
    selector = selectors.DefaultSelector()
    for watcher in watchers:
        selector.register(watcher.sock, selectors.EVENT_READ, watcher)
    stdin_key = object()
    selector.register(sys.stdin.fileno(), selectors.EVENT_READ, stdin_key)
    announced = False
    connect_deadline = time.monotonic() + 60
    try:
        while True:
            for key, _mask in selector.select(timeout=1.0):
                if key.data is stdin_key:
                    if not os.read(sys.stdin.fileno(), 1 << 12):
                        return record  # the bench closed it: the run is over
                    continue
                watcher = key.data
                watcher.on_readable()
                if not watcher.open:
                    selector.unregister(watcher.sock)
            if not announced:
                if record["connected"] == count:
                    print(f"CONNECTED {record['connected']}", flush=True)
                    announced = True
                elif time.monotonic() > connect_deadline:
                    raise TimeoutError(f"{record['connected']} of {count} watchers connected in 60 s")
    finally:
        selector.close()
        for watcher in watchers:
            watcher.sock.close()


def main(argv: list[str]) -> int:
    import resource

    from compositord.daemon.heap import freeze_startup_objects

    url, count = argv[0], int(argv[1])
    freeze_startup_objects()  # a full collection's pause would show as the daemon's latency
    record = _watch_all(url, count)
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
