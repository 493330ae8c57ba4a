"""control_latency: the daemon at 60 fps under control traffic from many clients.

For (connected clients, of which editing at 60 Hz) = (1, 1), (10, 10), (100, 10), (100, 100), every
client reading all events, the p50 / p99 / max of:

- (a) tune -> its ack in ``nodeparamschanged`` (``_acks[my nonce] >= rev``, as the editing client reads it),
- (b) tune -> the view data (``nodeviewdataupdated``) carrying its ack,
- (c) tune -> the first output frame that shows it: the edited layer is a small probe-coloured square
  whose x each tune sets to a fresh value; the daemon process (``perf.latency_daemon``) reads one row of
  every output frame and logs (time, x). A tune overtaken by a newer one before a frame latched it is
  never shown; those are counted, not timed.

and the render loop's frame intervals (from the probe log) and render times (``nodestatsupdated``),
with the frames it dropped during the load (its own count, from its stats around the edits) and the
frames that ended late (intervals of 1.5 frame periods or more in the probe log). The daemon runs in its own process (as deployed); all
clients share this process's trio loop. Times are ``time.monotonic()`` in both processes.

Editing clients use the client library's stamps and masking: in a process of their own over picows
(``--editors raw``, the default; ``perf/latency_editors.py`` says why), or as the trio client library in
this process (``--editors client``). Watching clients read and decode every event
(``json.loads``), in a process of their own over picows (``--observers raw``, the default;
``perf/latency_watchers.py`` says why), or through the client library in this process
(``--observers client``). The CPU each process used during the edits is part of the result, as is the
time from a frame's end to its view data being read, by the editors and by the watchers, so the
figures say where the time went.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compositord.daemon.heap import freeze_startup_objects
from compositord.perf.latency_daemon import PROBE_COLOR
from compositord.perf.measure import percentiles
from compositord.perf.options import BenchOptions

NAME = "control_latency"
CONFIGS = ((1, 1), (10, 10), (100, 10), (100, 100))
QUICK_CONFIGS = ((1, 1), (10, 5))  # --quick: the machinery, watchers included, not a measurement
FPS = 60
EDIT_HZ = 60
WIDTH, HEIGHT = 1280, 720
PROBE_Y, PROBE_SIZE = 600, 32
PROBE_ROW = PROBE_Y + PROBE_SIZE // 2
X_VALUES = 1100  # distinct probe positions; a value comes back every X_VALUES tunes
SESSION = "latency"
NODE = "comp"
IDLE_SECONDS = 1.0  # the render loop alone first: its drops without control traffic
ACK_WAIT_SECONDS = 30.0  # after the edits, how long the last acks may take before they count as missing


def pipeline() -> dict[str, Any]:
    return {
        "nodes": {
            "bars": {"kind": "video::colorbars", "params": {"width": WIDTH, "height": HEIGHT}},
            "probe": {
                "kind": "video::colorbars",
                "params": {"width": 64, "height": 64, "pattern": "solid", "color": PROBE_COLOR},
            },
            NODE: {
                "kind": "video::compositor",
                "params": {
                    "width": WIDTH,
                    "height": HEIGHT,
                    "fps": FPS,
                    "num_inputs": 2,
                    "output_format": "rgba8",
                    "layers": {"in_1": {"rect": probe_rect(0), "aspect_fit": False}},
                    "text_overlays": [{"id": "title", "text": "compositord", "rect": {"x": 40, "y": 40}}],
                },
            },
        },
        "connections": [
            {"from_node": "bars", "from_pin": "out", "to_node": NODE, "to_pin": "in_0"},
            {"from_node": "probe", "from_pin": "out", "to_node": NODE, "to_pin": "in_1"},
        ],
    }


def probe_rect(x: int) -> dict[str, int]:
    return {"x": x, "y": PROBE_Y, "width": PROBE_SIZE, "height": PROBE_SIZE}


@dataclass
class Sent:
    t: float
    x: int
    ack_t: dict[str, float] = field(default_factory=dict)  # channel ("params", "view") -> when its ack was read


@dataclass
class EditorLog:
    sent: dict[int, Sent] = field(default_factory=dict)  # rev -> when and what
    acked: dict[str, int] = field(default_factory=lambda: {"params": 0, "view": 0})  # channel -> highest rev seen acked
    phase: float = 0.0  # fraction of a period: editors are spread over it
    # Each send at a random point of its period (still EDIT_HZ on average): the sends then meet the frame
    # clock at every phase, so two runs (two engine modes) compare without the luck of one fixed phase.
    jitter: bool = False

    def read_ack(self, channel: str, ack: int, now: float) -> None:
        """An event of ``channel`` acknowledged every rev up to ``ack``: time the ones not acknowledged before."""
        for rev in range(self.acked[channel] + 1, ack + 1):
            if rev in self.sent:
                self.sent[rev].ack_t[channel] = now
        self.acked[channel] = max(self.acked[channel], ack)

    def all_acked(self) -> bool:
        last = max(self.sent, default=0)
        return all(acked >= last for acked in self.acked.values())


@dataclass
class RunLog:
    editors: list[EditorLog] = field(default_factory=list)
    stats: list[dict[str, Any]] = field(default_factory=list)
    events_read: int = 0
    events_dropped: int = 0
    refused: int = 0
    window: tuple[float, float] = (0.0, 0.0)  # monotonic start and stop of the edits
    # The render loop's stats read while the first client was the only one connected: its drops without load.
    idle_stats: tuple[dict[str, Any], dict[str, Any]] | None = None
    # Cores used during the edits: (the daemon's own process, this process, the watchers' process, the daemon's engine processes).
    cpu: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    steal_seconds: float | None = None  # CPU time the hypervisor gave to others during the edits (None: not known)
    watchers: dict[str, Any] = field(default_factory=dict)  # what perf.latency_watchers reported
    view_delivery_ms: list[float] = field(default_factory=list)  # frame end (view data "timestamp") -> read by an editor
    go: Any = None  # trio.Event: every client is connected and ``window`` is set
    finished: Any = None  # trio.Event: the run is over (edits done, last acks in or given up)


async def _client(url: str, log: RunLog, editor: EditorLog | None, x_counter: itertools.count, stats: bool) -> None:
    import trio

    from compositord.client import open_client

    async with open_client(url) as client:
        nonce = client.nonce

        async def read() -> None:
            async for event in client.events():
                now = time.monotonic()
                log.events_read += 1
                if event.name == "refused":
                    log.refused += 1
                if event.node_id != NODE:
                    continue
                payload = event.payload
                if event.name == "nodestatsupdated" and stats:
                    log.stats.append({"t": now, **dict(payload.get("stats", {}))})
                if editor is None:
                    continue
                if event.name == "nodeparamschanged":
                    editor.read_ack("params", int(payload.get("params", {}).get("_acks", {}).get(nonce, 0)), now)
                elif event.name == "nodeviewdataupdated":
                    stamp_time = payload.get("timestamp")
                    if isinstance(stamp_time, (int, float)):
                        log.view_delivery_ms.append((time.time() - stamp_time) * 1000.0)
                    editor.read_ack("view", int(payload.get("data", {}).get("_acks", {}).get(nonce, 0)), now)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await log.go.wait()
            if editor is not None:
                start_at, stop_at = log.window
                period = 1.0 / EDIT_HZ
                next_at = start_at + period * editor.phase
                jitter = random.Random(editor.phase) if editor.jitter else None
                while next_at < stop_at:
                    send_at = next_at + (jitter.random() * period if jitter is not None else 0.0)
                    await trio.sleep(max(0.0, send_at - time.monotonic()))
                    x = 16 + next(x_counter) % X_VALUES
                    sent_t = time.monotonic()
                    stamp = await client.tune(SESSION, NODE, {"layers": {"in_1": {"rect": probe_rect(x)}}}, sync=False)
                    editor.sent[stamp.rev] = Sent(sent_t, x)
                    next_at += period
            await log.finished.wait()  # every editor's last acks arrived (or ACK_WAIT_SECONDS passed)
            log.events_dropped += client.statistics().events_dropped
            nursery.cancel_scope.cancel()


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU seconds of a process (this one when None), from /proc or getrusage."""
    if pid is None:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def steal_seconds() -> float | None:
    """CPU seconds, all CPUs together, that the hypervisor ran something else while this machine had work
    (``steal`` in /proc/stat); None where the kernel does not say. On a virtual machine, bursts of it
    are stalls of every process at once, which no code here causes or can avoid."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, their children and so on (engine processes and their helpers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found: list[int] = []
    pending = list(children.get(pid, []))
    while pending:
        child = pending.pop()
        found.append(child)
        pending.extend(children.get(child, []))
    return found


def tree_cpu_seconds(pid: int) -> tuple[float, float]:
    """(CPU seconds of ``pid`` itself, of its living descendants); a process that ended meanwhile counts as 0."""

    def safe(process: int) -> float:
        try:
            return cpu_seconds(process)
        except (OSError, ValueError, IndexError):
            return 0.0

    return safe(pid), sum(safe(child) for child in descendants(pid))


async def _drive(
    url: str,
    clients: int,
    editing: int,
    seconds: float,
    daemon_pid: int,
    observers: str = "raw",
    watchers_nice: int = 0,
    jitter: bool = False,
    editors: str = "raw",
) -> RunLog:
    import trio

    log = RunLog(go=trio.Event(), finished=trio.Event())
    counter = itertools.count()
    log.editors = [EditorLog(phase=index / max(1, editing), jitter=jitter) for index in range(editing)]  # out of phase
    watchers: subprocess.Popen[str] | None = None
    editors_process: subprocess.Popen[str] | None = None

    async def start_watchers() -> subprocess.Popen[str] | None:
        if observers != "raw" or clients <= editing:
            return None
        niced = ["nice", "-n", str(watchers_nice)] if watchers_nice else []
        process = subprocess.Popen(
            [*niced, sys.executable, "-m", "compositord.perf.latency_watchers", url, str(clients - editing)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        with trio.fail_after(90):
            line = await trio.to_thread.run_sync(process.stdout.readline)
        if not line.startswith("CONNECTED"):
            raise RuntimeError(f"the watchers did not connect: {line!r}")
        return process

    def cpu_now() -> tuple[float, float, float, float]:
        control, engines = tree_cpu_seconds(daemon_pid)
        clients_cpu = cpu_seconds() + (cpu_seconds(editors_process.pid) if editors_process is not None else 0.0)
        return (control, clients_cpu, cpu_seconds(watchers.pid) if watchers is not None else 0.0, engines)

    async def cpu_meter() -> None:
        start_at, stop_at = log.window
        await trio.sleep(max(0.0, start_at - time.monotonic()))
        before, steal_before = cpu_now(), steal_seconds()
        await trio.sleep(max(0.0, stop_at - time.monotonic()))
        after, steal_after = cpu_now(), steal_seconds()
        daemon, ours, watchers_cpu, engines = ((a - b) / seconds for a, b in zip(after, before, strict=True))
        log.cpu = (daemon, ours, watchers_cpu, engines)
        if steal_before is not None and steal_after is not None:
            log.steal_seconds = steal_after - steal_before

    async def finish() -> None:
        """After the edits, wait (bounded) until every editor has both acks of its last tune."""
        stop_at = log.window[1]
        await trio.sleep(max(0.0, stop_at - time.monotonic()))
        with trio.move_on_after(ACK_WAIT_SECONDS):
            while not all(editor.all_acked() for editor in log.editors):
                await trio.sleep(0.02)
        # The render loop's own count of dropped frames comes with its stats, once a second: wait (bounded)
        # for the first stats after the edits, so the count brackets them.
        with trio.move_on_after(1.5):
            while not any(stat["t"] > stop_at for stat in log.stats):
                await trio.sleep(0.02)
        await trio.sleep(0.2)  # a little more for the stats
        log.finished.set()

    async def read_idle_stats() -> None:
        """Two of the render loop's stats, IDLE_SECONDS apart, while the first client is alone."""
        with trio.move_on_after(IDLE_SECONDS + 3.0):
            while not log.stats:
                await trio.sleep(0.02)
            first = log.stats[-1]
            while log.stats[-1]["t"] < first["t"] + IDLE_SECONDS - 0.1:
                await trio.sleep(0.02)
            if "frames_dropped" in first and "frames_dropped" in log.stats[-1]:
                log.idle_stats = (first, log.stats[-1])

    def open_window() -> float:
        """When the edits start: once every client is connected and the daemon has settled, and after the
        render loop's stats reached the first client at least once more (its count before the edits)."""
        start_at = time.monotonic() + 1.3 + (editing if watchers is not None else clients) * 0.02
        log.window = (start_at, start_at + seconds)
        return start_at

    async def edit_here() -> None:
        """The editors (and with ``--observers client`` the watchers) as trio clients of the library, in this process."""
        nonlocal watchers
        async with trio.open_nursery() as nursery:
            # The first client connects alone and reads the render loop's stats (once a second) with no
            # other client and no edits: the loop's own count of the frames it drops without control traffic.
            nursery.start_soon(_client, url, log, log.editors[0] if editing else None, counter, True)
            await read_idle_stats()
            watchers = await start_watchers()
            for index in range(1, clients):
                editor = log.editors[index] if index < editing else None
                if editor is not None or watchers is None:
                    nursery.start_soon(_client, url, log, editor, counter, False)
            open_window()
            nursery.start_soon(cpu_meter)
            nursery.start_soon(finish)
            log.go.set()

    async def edit_in_own_process() -> None:
        """The editors in perf/latency_editors.py: the same steps as below, over its standard input and output."""
        nonlocal watchers, editors_process
        editors_process = subprocess.Popen(
            [sys.executable, "-m", "compositord.perf.latency_editors", url, str(editing), *(["--jitter"] if jitter else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        stdin, stdout = editors_process.stdin, editors_process.stdout
        assert stdin is not None and stdout is not None

        async def expect(prefix: str, timeout: float) -> str:
            with trio.fail_after(timeout):
                line = await trio.to_thread.run_sync(stdout.readline)
            if not line.startswith(prefix):
                raise RuntimeError(f"the editors' process said {line!r}, not {prefix}")
            return line

        def tell(line: str) -> None:
            stdin.write(line + "\n")
            stdin.flush()

        await expect("IDLE", 90 + IDLE_SECONDS)
        watchers = await start_watchers()
        async with trio.open_nursery() as nursery:
            if watchers is None:  # --observers client: the watching clients run the client library here
                for _ in range(editing, clients):
                    nursery.start_soon(_client, url, log, None, counter, False)
            tell("CONNECT")
            await expect("CONNECTED", 90)
            start_at = open_window()
            tell(f"GO {start_at!r} {log.window[1]!r}")
            nursery.start_soon(cpu_meter)
            log.go.set()
            report = json.loads(await expect("{", 1.3 + seconds + ACK_WAIT_SECONDS + 30))
            log.finished.set()
        _read_editors_report(log, report)

    try:
        if editors == "raw" and editing:
            await edit_in_own_process()
        else:
            await edit_here()
        stop_at = log.window[1]
        if watchers is not None:
            await trio.sleep(max(0.0, stop_at + 0.5 - time.monotonic()))
            out, _ = await trio.to_thread.run_sync(watchers.communicate, "")  # closing its stdin stops it
            log.watchers = json.loads(out.strip().splitlines()[-1])
            log.events_read += int(log.watchers["events"])
    finally:
        for process in (watchers, editors_process):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    return log


def _read_editors_report(log: RunLog, report: dict[str, Any]) -> None:
    """What perf/latency_editors.py printed, laid into the run's log as the trio editors would have filled it."""
    for editor, tunes in zip(log.editors, report["tunes"], strict=True):
        for rev, sent_t, x, params_ack, view_ack in tunes:
            sent = editor.sent[rev] = Sent(sent_t, x)
            for channel, ack_t in (("params", params_ack), ("view", view_ack)):
                if ack_t is not None:
                    sent.ack_t[channel] = ack_t
    log.stats = list(report["stats"])
    if report["idle_stats"] is not None:
        first, last = report["idle_stats"]
        if "frames_dropped" in first and "frames_dropped" in last:
            log.idle_stats = (first, last)
    log.view_delivery_ms = list(report["view_delivery_ms"])
    log.events_read += int(report["events_read"])
    log.refused += int(report["refused"])
    if report["closed"] or report["malformed"]:
        raise RuntimeError(
            f"the editors' process: {report['closed']} connections closed by the daemon, {report['malformed']} malformed messages"
        )


def _frames(probe_file: Path) -> list[tuple[float, int]]:
    rows = []
    for line in probe_file.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2:
            rows.append((float(parts[0]), int(parts[1])))
    return rows


def _shown_latencies(log: RunLog, frames: list[tuple[float, int]]) -> tuple[list[float], int]:
    """(tune -> first frame showing its x, in ms; tunes never shown)."""
    import bisect

    times = [t for t, _ in frames]
    latencies: list[float] = []
    never = 0
    horizon = 0.9 * X_VALUES / max(1.0, _tunes_per_second(log))  # before the same x is sent again
    for editor in log.editors:
        for sent in editor.sent.values():
            index = bisect.bisect_left(times, sent.t)
            found = None
            while index < len(frames) and frames[index][0] - sent.t <= min(horizon, 2.0):
                if frames[index][1] == sent.x:
                    found = frames[index][0]
                    break
                index += 1
            if found is None:
                never += 1
            else:
                latencies.append((found - sent.t) * 1000.0)
    return latencies, never


def _tunes_per_second(log: RunLog) -> float:
    sent = [s.t for e in log.editors for s in e.sent.values()]
    if len(sent) < 2:
        return 1.0
    return len(sent) / max(1e-3, max(sent) - min(sent))


def run_config(
    clients: int,
    editing: int,
    seconds: float,
    observers: str = "raw",
    watchers_nice: int = 0,
    engine_mode: str = "process",
    jitter: bool = False,
    tune_log: str | None = None,
    daemon_session: str = "own",
    editors: str = "raw",
) -> dict[str, Any]:
    import trio
    import yaml

    folder = Path(tempfile.mkdtemp(prefix="compositord-latency-"))
    try:
        pipeline_file = folder / f"{SESSION}.yaml"
        pipeline_file.write_text(yaml.safe_dump(pipeline()))
        probe_file = folder / "probe.log"
        env = dict(os.environ)
        daemon = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "compositord.perf.latency_daemon",
                str(folder / "state"),
                str(pipeline_file),
                str(probe_file),
                str(PROBE_ROW),
                engine_mode,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # As deployed (a systemd service, or a terminal of its own), the daemon is not in its clients'
            # session: with the kernel's autogroups (sched_autogroup_enabled) the scheduler then shares the
            # CPU between the daemon's processes and the bench's as two groups, as it would between a service
            # and the programs of a user. "shared" measures it inside the bench's group (perf/README.md).
            start_new_session=daemon_session == "own",
        )
        own_session = os.getsid(daemon.pid) != os.getsid(0)
        try:
            assert daemon.stdout is not None
            line = daemon.stdout.readline()
            if not line.startswith("READY"):
                raise RuntimeError(f"latency daemon did not start: {line!r} {daemon.stderr.read() if daemon.stderr else ''}")
            url = f"ws://127.0.0.1:{int(line.split()[1])}/api/v1/control"
            # The editors' process is the harness: a full collection of its imports (about 27 ms at
            # this load) would be measured as the daemon's latency.
            freeze_startup_objects()
            log = trio.run(_drive, url, clients, editing, seconds, daemon.pid, observers, watchers_nice, jitter, editors)
            if tune_log is not None:
                _append_tune_log(Path(tune_log), log, clients, editing, engine_mode)
        finally:
            daemon.terminate()
            try:
                daemon.wait(timeout=15)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        frames = _frames(probe_file)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    start_at, stop_at = log.window

    def ack_latencies_ms(channel: str) -> list[float]:
        return [(s.ack_t[channel] - s.t) * 1000.0 for e in log.editors for s in e.sent.values() if channel in s.ack_t]

    params_ms, view_ms = ack_latencies_ms("params"), ack_latencies_ms("view")
    shown_ms, never_shown = _shown_latencies(log, frames)
    tunes = sum(len(e.sent) for e in log.editors)
    in_window = [t for t, _ in frames if start_at <= t <= stop_at]
    intervals = [(b - a) * 1000.0 for a, b in itertools.pairwise(in_window)]
    idle_from, idle_to = (log.idle_stats[0]["t"], log.idle_stats[1]["t"]) if log.idle_stats else (0.0, start_at - 1.0)
    idle = [t for t, _ in frames if idle_from <= t <= idle_to]
    idle_intervals = [(b - a) * 1000.0 for a, b in itertools.pairwise(idle)]
    period_ms = 1000.0 / FPS
    # Dropped: the slots the render loop skipped (its own count, loop.py: a frame that ends after the next
    # one's due time drops the slots it overran), from its stats just before and just after the edits, and
    # idle from two of its stats while the first client was alone. Late: gaps between two frames' ends of 1.5 periods or more in the probe log (a frame that was late
    # but not dropped shows as one long interval and one short). Without stats around the window, the
    # late frames stand in for the dropped ones (the estimate the scenario made before the loop's count).
    late_load = _frames_missing_between(intervals, period_ms)
    late_idle = _frames_missing_between(idle_intervals, period_ms)
    if log.idle_stats is not None:
        dropped_idle = int(log.idle_stats[1]["frames_dropped"]) - int(log.idle_stats[0]["frames_dropped"])
    else:
        dropped_idle = late_idle
    before = [stat for stat in log.stats if stat["t"] <= start_at and "frames_dropped" in stat]
    after = [stat for stat in log.stats if stat["t"] > stop_at and "frames_dropped" in stat]
    counted = bool(before and after)
    dropped_load = int(after[0]["frames_dropped"]) - int(before[-1]["frames_dropped"]) if counted else late_load
    load_stats = [s for s in log.stats if start_at + 1.0 <= s["t"] <= stop_at + 0.5]
    return {
        "clients": clients,
        "editing": editing,
        "engine_mode": engine_mode,
        "jitter": jitter,
        "observers": observers,
        "editors": editors if editing else None,
        "watchers_nice": watchers_nice,
        "watchers_niceness": log.watchers.get("nice"),  # as the watchers' process saw it
        "daemon_session": daemon_session,
        "daemon_own_session": own_session,  # as the kernel had it
        "seconds": seconds,
        "tunes_sent": tunes,
        "tunes_per_second": round(tunes / seconds, 1),
        "refused": log.refused,
        "client_events_dropped": log.events_dropped,
        "cpu_cores_daemon": round(log.cpu[0], 2),
        "cpu_cores_engines": round(log.cpu[3], 2),
        "cpu_cores_clients": round(log.cpu[1], 2),
        "cpu_cores_watchers": round(log.cpu[2], 2),
        "host_steal_seconds": None if log.steal_seconds is None else round(log.steal_seconds, 2),
        "watchers_connected": log.watchers.get("connected", 0),
        "watchers_events_read": log.watchers.get("events", 0),
        "watchers_view_delivery_ms": log.watchers.get("view_delivery_ms"),
        "events_read": log.events_read,
        "a_params_ack_ms": percentiles(params_ms),
        "b_view_ack_ms": percentiles(view_ms),
        "c_frame_shown_ms": percentiles(shown_ms),
        "params_acks_missing": tunes - len(params_ms),
        "view_acks_missing": tunes - len(view_ms),
        "tunes_never_shown": never_shown,
        "frame_interval_ms": percentiles(intervals),
        "view_delivery_ms": percentiles(log.view_delivery_ms),
        "frames_in_window": len(in_window),
        "frames_expected": round(seconds * FPS),
        "frames_dropped_under_load": dropped_load,
        "frames_dropped_counted_by": "render loop" if counted else "probe intervals",
        "frames_late_under_load": late_load,
        "frames_dropped_idle": dropped_idle,
        "frames_dropped_idle_counted_by": "render loop" if log.idle_stats is not None else "probe intervals",
        "frames_late_idle": late_idle,
        "idle_seconds": round(idle_to - idle_from, 2) if log.idle_stats is not None else None,
        "render_ms_p50": [s.get("render_ms_p50") for s in load_stats],
        "render_ms_p99": [s.get("render_ms_p99") for s in load_stats],
        "b_p99_target_ms": round(2 * period_ms, 2),
    }


def _frames_missing_between(intervals_ms: list[float], period_ms: float) -> int:
    """Frame slots with no frame end in the probe log: a gap of 1.5 periods or more counts one per period past the first."""
    return sum(max(0, round(interval / period_ms) - 1) for interval in intervals_ms)


def _append_tune_log(path: Path, log: RunLog, clients: int, editing: int, engine_mode: str) -> None:
    """One JSON line per tune: when it was sent and when each ack was read (monotonic seconds, null: never)."""
    with path.open("a") as out:
        for index, editor in enumerate(log.editors):
            for rev, sent in sorted(editor.sent.items()):
                row = {"clients": clients, "editing": editing, "engine_mode": engine_mode, "editor": index, "rev": rev}
                row.update(sent=sent.t, params_ack=sent.ack_t.get("params"), view_ack=sent.ack_t.get("view"))
                out.write(json.dumps(row) + "\n")


def run(options: BenchOptions) -> dict[str, Any]:
    seconds = options.seconds if options.seconds is not None else (1.0 if options.quick else 8.0)
    configs = QUICK_CONFIGS if options.quick else (options.latency_configs or CONFIGS)
    options.say(
        f"== {NAME}: daemon at {FPS} fps, {WIDTH}x{HEIGHT}; tunes at {EDIT_HZ} Hz per editing client, {seconds:g} s per config; "
        f"editing clients: {options.editors}; watching clients: {options.observers}"
        + (f", their process {options.watchers_nice} nice steps down" if options.watchers_nice else "")
        + ("; the daemon in a session of its own" if options.daemon_session == "own" else "; the daemon in the bench's session")
    )
    modes = ("process", "thread") if options.engine_mode == "both" else (options.engine_mode,)
    repetitions = options.iterations_or(1, 1)
    rows = []
    failures: list[dict[str, Any]] = []
    for repetition in range(repetitions):
        for clients, editing in configs:
            for mode in modes:  # interleaved, so both modes see the same machine
                try:
                    row = run_config(
                        clients,
                        editing,
                        seconds,
                        options.observers,
                        options.watchers_nice,
                        mode,
                        options.jitter,
                        options.tune_log,
                        options.daemon_session,
                        options.editors,
                    )
                except Exception as exc:  # one configuration that fails (the daemon cut a client) ends no other
                    failures.append({"clients": clients, "editing": editing, "engine_mode": mode, "error": _last_line(exc)})
                    options.say(f"-- ({clients}, {editing}) [{mode} engines]: failed: {failures[-1]['error']}")
                    continue
                row["repetition"] = repetition + 1
                rows.append(row)
                options.say(format_row(row))
    result: dict[str, Any] = {"rows": rows, "fps": FPS, "frame_interval_target_ms": round(1000.0 / FPS, 2), "failures": failures}
    result["summary"] = summarize(rows)
    for line in format_summary(result["summary"]):
        options.say(line)
    return result


def _last_line(exc: BaseException) -> str:
    """The innermost message of an exception (group)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (clients, editing, mode): the view-ack p99 of every repetition, how many met the target, and drops."""
    groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["clients"], row["editing"], row["engine_mode"]), []).append(row)
    summary = []
    for (clients, editing, mode), group in groups.items():
        p99s = [row["b_view_ack_ms"].get("p99") for row in group]
        target = group[0]["b_p99_target_ms"]
        summary.append(
            {
                "clients": clients,
                "editing": editing,
                "engine_mode": mode,
                "view_ack_p99_ms": p99s,
                "runs_meeting_target": sum(1 for p99 in p99s if p99 is not None and p99 <= target),
                "runs_meeting_target_without_drops": sum(
                    1
                    for row, p99 in zip(group, p99s, strict=True)
                    if p99 is not None and p99 <= target and row["frames_dropped_under_load"] <= row["frames_dropped_idle"]
                ),
                "runs": len(group),
                "frames_dropped_under_load": [row["frames_dropped_under_load"] for row in group],
                "host_steal_seconds": [row.get("host_steal_seconds") for row in group],
                "target_ms": target,
            }
        )
    return summary


def format_summary(summary: list[dict[str, Any]]) -> list[str]:
    lines = [
        "== control_latency summary: view-ack p99 per run (target: at most two frame intervals, no frame dropped for the load)"
    ]
    for item in summary:
        lines.append(
            f"-- ({item['clients']}, {item['editing']}) {item['engine_mode']:7s}: p99 {item['view_ack_p99_ms']} ms; "
            f"{item['runs_meeting_target_without_drops']}/{item['runs']} runs meet {item['target_ms']} ms without drops "
            f"(drops under load {item['frames_dropped_under_load']}; seconds stolen by the host {item['host_steal_seconds']})"
        )
    return lines


def _fmt(p: dict[str, Any]) -> str:
    if not p.get("count"):
        return "n/a"
    return f"p50 {p['p50']:.1f}  p99 {p['p99']:.1f}  max {p['max']:.1f} ms (n={p['count']})"


def format_row(row: dict[str, Any]) -> str:
    return (
        f"-- ({row['clients']}, {row['editing']}): {row['tunes_sent']} tunes ({row['tunes_per_second']}/s), {row['events_read']} events read; "
        f"[{row['engine_mode']} engines] CPU cores used: daemon {row['cpu_cores_daemon']}, its engines {row['cpu_cores_engines']}, "
        f"clients {row['cpu_cores_clients']}, watchers {row['cpu_cores_watchers']}; "
        f"stolen by the host {row['host_steal_seconds'] if row['host_steal_seconds'] is not None else '?'} s\n"
        f"   (a) tune -> params ack : {_fmt(row['a_params_ack_ms'])}\n"
        f"   (b) tune -> view ack   : {_fmt(row['b_view_ack_ms'])}   [target p99 <= {row['b_p99_target_ms']} ms]\n"
        f"   view data frame -> read: {_fmt(row['view_delivery_ms'])}; by the watchers: {_fmt(row['watchers_view_delivery_ms'] or {})}\n"
        f"   (c) tune -> on screen  : {_fmt(row['c_frame_shown_ms'])}; overtaken before shown: {row['tunes_never_shown']}\n"
        f"   frame interval         : {_fmt(row['frame_interval_ms'])}; frames {row['frames_in_window']}/{row['frames_expected']}, "
        f"dropped under load {row['frames_dropped_under_load']} (counted by the {row['frames_dropped_counted_by']}), "
        f"late {row['frames_late_under_load']}; idle: dropped {row['frames_dropped_idle']} "
        f"(counted by the {row['frames_dropped_idle_counted_by']}), late {row['frames_late_idle']}\n"
        f"   render ms p50/p99 per second: {row['render_ms_p50']} / {row['render_ms_p99']}"
    )
