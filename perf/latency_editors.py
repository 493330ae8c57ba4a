"""The editing clients of control_latency, in a process of their own (``--editors raw``, the default).

``python -m compositord.perf.latency_editors URL COUNT [--jitter]`` talks to the bench over its
standard input and output, one line each way per step:

1. It connects the first editor alone, which reads the render loop's stats (once a second) with no
   other client and no edits, and prints ``IDLE`` after two of them ``IDLE_SECONDS`` apart.
2. On ``CONNECT`` it connects the other editors and prints ``CONNECTED <n>``.
3. On ``GO <start> <stop>`` (``time.monotonic()`` seconds, the same clock in every process) each
   editor tunes the probe's rect at ``EDIT_HZ`` in that window, spread over the period as the trio
   editors are. After the window it waits (bounded) for both acks of every tune and for the render
   loop's first stats after the window, then prints one JSON line: every tune's send time, x and ack
   times, the stats, the time from each frame's end to its view data being read, and its CPU seconds.

What an editor does per tune and per event is the client library's own sans-IO part, as
``compositord.client.Client`` calls it: :class:`~compositord.client.session_state.SessionStates`
stamps and masks each tune (``edit_patch``), ``envelope.serialize`` frames it, every message is read
with ``envelope.parse_message(strict=False)`` and every event goes through ``apply_event`` (the
masking rules), and a refusal drops its pending value. Only the transport differs: picows on asyncio
(frames parsed in compiled code, one callback per frame) instead of trio-websocket, whose tasks,
channels and cancel scopes cost the ten editors' one process 0.35-0.5 of a core at (100, 10), more
than the daemon's control process (perf/README.md). On a 2-core machine that CPU is taken from the
daemon and measured as its latency, as the watchers' was (``latency_watchers.py`` says more).
``--editors client`` keeps the trio client library in the bench's own process.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from compositord.client.session_state import SessionStates
from compositord.protocol import envelope
from compositord.protocol.envelope import PATCH, ErrorReply, Event, Response, TuneNode
from compositord.protocol.errors import RemoteProtocolError

try:
    from picows import WSMsgType, WSTransport, ws_connect
except ImportError as exc:  # pragma: no cover - the bench's extra is installed by scripts/dev and CI
    raise SystemExit(f"control_latency's editors need picows: pip install 'compositord[bench]' ({exc})") from exc

# The session, node, probe rect and timings are the scenario's own, so the two cannot drift apart.
from compositord.perf import scenario_latency as scenario
from compositord.perf.latency_watchers import TextMessages

CONNECT_TIMEOUT_S = 60.0
STATS_AFTER_WINDOW_S = 1.5  # the render loop sends its stats once a second


@dataclass
class _Run:
    """What every editor adds to, on the one asyncio loop."""

    stats: list[dict[str, Any]] = field(default_factory=list)  # the render loop's, as the first editor read them
    view_delivery_ms: list[float] = field(default_factory=list)
    events_read: int = 0
    refused: int = 0
    malformed: int = 0
    closed: int = 0  # connections the daemon closed during the run
    stopping: bool = False
    x_counter: itertools.count[int] = field(default_factory=itertools.count)


class _Editor(TextMessages):
    """One editing connection: the client library's causal state over a picows transport."""

    def __init__(self, run: _Run, reads_stats: bool) -> None:
        super().__init__()
        self.run = run
        self.reads_stats = reads_stats
        self.states = SessionStates()
        self.transport: WSTransport | None = None
        self.log = scenario.EditorLog()  # every tune's send and ack times, as the trio editors keep them
        self.correlation_ids = itertools.count(1)

    # -- picows callbacks

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if not self.run.stopping:
            self.run.closed += 1

    # -- what the client library does with each message

    def on_text(self, text: str) -> None:
        now = time.monotonic()
        try:
            message = envelope.parse_message(text, strict=False)  # our server's text, as Client reads it
            if isinstance(message, Response):
                if message.action == "error":
                    self._refused(ErrorReply.from_response(message))
                return
            if not isinstance(message, Event):
                return
            self.states.apply_event(message)  # the masking rules, as Client._handle_event
        except RemoteProtocolError:
            self.run.malformed += 1
            return
        run = self.run
        run.events_read += 1
        payload = message.payload
        if payload.get("node_id") != scenario.NODE:
            return
        if message.event == "nodestatsupdated" and self.reads_stats:
            run.stats.append({"t": now, **dict(payload.get("stats", {}))})
        elif message.event == "nodeparamschanged":
            self._read_ack("params", payload.get("params", {}), now)
        elif message.event == "nodeviewdataupdated":
            stamp_time = payload.get("timestamp")
            if isinstance(stamp_time, (int, float)):
                run.view_delivery_ms.append((time.time() - stamp_time) * 1000.0)
            self._read_ack("view", payload.get("data", {}), now)

    def _refused(self, reply: ErrorReply) -> None:
        self.run.refused += 1
        for node_id, stamp in reply.refused_stamps():
            if stamp.sender == self.states.nonce:
                self.states.refused(scenario.SESSION, node_id, stamp.rev)

    def _read_ack(self, channel: str, state: dict[str, Any], now: float) -> None:
        self.log.read_ack(channel, int(state.get("_acks", {}).get(self.states.nonce, 0)), now)

    # -- one tune, stamped and masked as Client.tune(..., sync=False) does

    def tune(self) -> None:
        assert self.transport is not None
        x = 16 + next(self.run.x_counter) % scenario.X_VALUES
        patch = {"layers": {"in_1": {"rect": scenario.probe_rect(x)}}}
        sent_t = time.monotonic()
        stamp = self.states.session(scenario.SESSION).edit_patch(scenario.NODE, patch)
        operation = TuneNode(scenario.SESSION, scenario.NODE, PATCH, patch, stamp, False)
        text = envelope.serialize(operation.to_request(f"c{next(self.correlation_ids)}"))
        self.transport.send(WSMsgType.TEXT, text.encode())
        self.log.sent[stamp.rev] = scenario.Sent(sent_t, x)

    def report(self) -> list[list[Any]]:
        return [[rev, s.t, s.x, s.ack_t.get("params"), s.ack_t.get("view")] for rev, s in sorted(self.log.sent.items())]


async def _connect(url: str, run: _Run, reads_stats: bool) -> _Editor:
    _transport, editor = await ws_connect(
        lambda: _Editor(run, reads_stats), url, websocket_handshake_timeout=30, max_frame_size=1 << 26
    )
    assert isinstance(editor, _Editor)
    return editor


async def _wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    """Poll ``condition`` every 20 ms until it holds or ``timeout`` passes; whether it held."""
    try:
        async with asyncio.timeout(timeout):
            while not condition():
                await asyncio.sleep(0.02)
        return True
    except TimeoutError:
        return False


def _edit(editor: _Editor, phase: float, jitter: bool, start_at: float, stop_at: float) -> asyncio.Future[None]:
    """Schedule ``editor``'s tunes in the window on the loop's clock (``time.monotonic``); done after the last."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    period = 1.0 / scenario.EDIT_HZ
    chance = random.Random(phase) if jitter else None
    slot = start_at + period * phase

    def schedule() -> None:
        if slot >= stop_at:
            done.set_result(None)
            return
        send_at = slot + (chance.random() * period if chance is not None else 0.0)
        loop.call_at(send_at, fire)

    def fire() -> None:
        nonlocal slot
        editor.tune()
        slot += period
        schedule()

    schedule()
    return done


async def _read_line() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if not line:
        raise SystemExit("the bench closed our standard input")
    return line.strip()


async def _run_editors(url: str, count: int, jitter: bool) -> dict[str, Any]:
    run = _Run()
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        editors = [await _connect(url, run, reads_stats=True)]

    def idle_done() -> bool:
        return len(run.stats) >= 2 and run.stats[-1]["t"] >= run.stats[0]["t"] + scenario.IDLE_SECONDS - 0.1

    idle_stats = [run.stats[0], run.stats[-1]] if await _wait_until(idle_done, scenario.IDLE_SECONDS + 3.0) else None
    print("IDLE", flush=True)

    if await _read_line() != "CONNECT":
        raise SystemExit("expected CONNECT")
    async with asyncio.timeout(CONNECT_TIMEOUT_S):
        for _ in range(1, count):
            editors.append(await _connect(url, run, reads_stats=False))
    print(f"CONNECTED {len(editors)}", flush=True)

    command, start, stop = (await _read_line()).split()
    if command != "GO":
        raise SystemExit("expected GO <start> <stop>")
    start_at, stop_at = float(start), float(stop)
    await asyncio.gather(*(_edit(editor, index / count, jitter, start_at, stop_at) for index, editor in enumerate(editors)))
    await _wait_until(lambda: all(editor.log.all_acked() for editor in editors), scenario.ACK_WAIT_SECONDS)
    await _wait_until(lambda: any(stat["t"] > stop_at for stat in run.stats), STATS_AFTER_WINDOW_S)
    await asyncio.sleep(0.2)  # a little more for the stats, as the trio editors wait
    usage = resource.getrusage(resource.RUSAGE_SELF)
    run.stopping = True
    for editor in editors:
        if editor.transport is not None:
            editor.transport.disconnect()
    return {
        "nonces": [editor.states.nonce for editor in editors],
        "tunes": [editor.report() for editor in editors],
        "stats": run.stats,
        "idle_stats": idle_stats,
        "view_delivery_ms": run.view_delivery_ms,
        "events_read": run.events_read,
        "refused": run.refused,
        "malformed": run.malformed,
        "closed": run.closed,
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
    }


def main(argv: list[str]) -> int:
    from compositord.daemon.heap import freeze_startup_objects

    url, count, jitter = argv[0], int(argv[1]), "--jitter" in argv[2:]
    freeze_startup_objects()  # a full collection's pause would show as the daemon's latency
    print(json.dumps(asyncio.run(_run_editors(url, count, jitter))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
