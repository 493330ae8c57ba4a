"""The watching clients of control_latency, in a process of their own.

``python -m compositord.perf.latency_watchers URL COUNT`` opens COUNT WebSocket connections to URL,
prints ``CONNECTED <n>`` once every handshake is done (the bench starts its edits only then: a
connection storm during the edits would be measured as latency), and reads every message on each,
parsing each, until its standard input is closed. Then it prints one JSON line: events read, the
time from a frame's end to its view data being read (as the editing clients measure it), and the
CPU this process used.

Why a process and a lean client: in deployment the watchers of a compositor are other machines
(operators' consoles, tally displays), each reading its WebSocket with a native implementation (a
browser's). On this 2-core machine they share the CPU with the daemon, so what they spend per message
is taken from the daemon and shows as its latency: the bench would measure its own load generator.
So the watchers are as cheap as a Python process can make them while still reading and decoding
every message:

- picows (WebSocket frames parsed in compiled code, one callback per frame, no task per
  connection or per message) on one asyncio loop. Before it, wsproto on a ``selectors`` loop parsed
  the frames in Python: 0.45-0.52 of a core at (100, 10), about a third of it in wsproto; the same
  bench then showed a view-ack p99 of 61 ms against 39 ms with a compiled frame parser (interleaved,
  4 pairs of 3 runs; perf/README.md). A trio task per connection before that cost 0.55.
- Every message is decoded with ``json.loads`` and read as a browser console reads it (``JSON.parse``,
  then the fields it shows): the envelope check of ``message_from_json`` cost these 90 clients 0.06 of
  a core, and the protocol's strict parser (duplicate keys, number ranges: a server's guard against
  untrusted input) twice that.
- How late the watchers read is part of the result, so a backlog on their side shows instead of
  hiding.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from compositord.perf.measure import percentiles

# picows is the bench's extra (pip install 'compositord[bench]'); imported here, at the top, so a machine
# without it fails at once with the name of what is missing, before any connection is made.
try:
    from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect
except ImportError as exc:  # pragma: no cover - the bench's extra is installed by scripts/dev and CI
    raise SystemExit(f"control_latency's watchers need picows: pip install 'compositord[bench]' ({exc})") from exc


@dataclass
class _Tally:
    """What every watcher adds to, on the one asyncio loop."""

    count: int
    events: int = 0
    connected: int = 0
    closed: int = 0  # by the daemon (a watcher too slow for its mailbox, say), not by the watchers stopping
    stopping: bool = False
    view_delivery_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "count": self.count,
            "events": self.events,
            "connected": self.connected,
            "closed": self.closed,
            "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "nice": os.nice(0),
            "view_delivery_ms": percentiles(self.view_delivery_ms),
        }


class TextMessages(WSListener):
    """A picows connection that hands each whole text message to :meth:`on_text` and answers a close.

    picows calls ``on_ws_frame`` for each frame it parsed; PING is answered by picows (enable_auto_pong),
    and the daemon sends no binary frames to these clients.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pieces: list[str] = []

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind == WSMsgType.TEXT or kind == WSMsgType.CONTINUATION:
            # The frame points into picows's buffer: its text is copied out before anything else.
            self.pieces.append(frame.get_payload_as_utf8_text())
            if frame.fin:
                text = "".join(self.pieces)
                self.pieces.clear()
                self.on_text(text)
        elif kind == WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code())
            transport.disconnect()

    def on_text(self, text: str) -> None:
        raise NotImplementedError


class _Watcher(TextMessages):
    """One watching connection: every message decoded, the view data's delivery timed."""

    def __init__(self, tally: _Tally) -> None:
        super().__init__()
        self.tally = tally

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.tally.connected += 1

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.tally.stopping:
            self.tally.closed += 1

    def on_text(self, text: str) -> None:
        message = json.loads(text)
        tally = self.tally
        tally.events += 1
        payload = message["payload"]  # a message without one is the daemon's bug: the watchers stop on it
        if message["type"] == "event" and payload.get("event") == "nodeviewdataupdated":
            stamp = payload.get("timestamp")
            if isinstance(stamp, (int, float)):
                tally.view_delivery_ms.append((time.time() - stamp) * 1000.0)


async def _watch_all(url: str, count: int) -> _Tally:
    """Connect ``count`` watchers, say so once all are connected, and read until standard input closes."""
    tally = _Tally(count)
    loop = asyncio.get_running_loop()
    transports: list[WSTransport] = []
    try:
        async with asyncio.timeout(60):
            for _ in range(count):
                transport, _listener = await ws_connect(
                    lambda: _Watcher(tally), url, websocket_handshake_timeout=30, max_frame_size=1 << 26
                )
                transports.append(transport)
    except TimeoutError:
        raise TimeoutError(f"{tally.connected} of {count} watchers connected in 60 s") from None
    print(f"CONNECTED {tally.connected}", flush=True)

    stdin_closed = asyncio.Event()

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 1 << 12):
            stdin_closed.set()  # the bench closed it: the run is over

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    try:
        await stdin_closed.wait()
    finally:
        loop.remove_reader(sys.stdin.fileno())
        tally.stopping = True
        for transport in transports:
            transport.disconnect()
    return tally


def main(argv: list[str]) -> int:
    from compositord.daemon.heap import freeze_startup_objects

    url, count = argv[0], int(argv[1])
    freeze_startup_objects()  # a full collection's pause would show as the daemon's latency
    tally = asyncio.run(_watch_all(url, count))
    print(json.dumps(tally.summary()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
