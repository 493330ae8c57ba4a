"""A sink whose encoder and output run in a helper process of their own (``sink::stream``).

Why a process: PyAV holds the GIL inside some blocking opens (a ``listen`` URL
nobody connects to, an RTMP peer that accepts TCP and never answers, a DNS
lookup that hangs). Measured in an engine process: a ``tcp://...?listen=1``
output with ``listen_timeout=1500`` stopped every thread of the process,
render thread included, for the whole 1.6 s of the open, and FFmpeg's own
timeouts do not bound the RTMP handshake. In a helper process only the helper
waits; the engine's render thread never notices, and the helper can be killed.

Engine side (:class:`HelperSink`, a ``Sink`` whose worker thread feeds the
helper): frames go into a two-buffer shared-memory slot (``frame_slots``) and a
reference to each goes over a ``SOCK_SEQPACKET`` socket pair as one JSON
datagram (JSON: the helper talks to network peers, and nothing it sends back
is more than numbers and a message). A frame's sound (``SinkFrame.audio``)
rides in the same buffer right after the pixels, as float32 samples the
datagram describes (``audio``: offset, sample count, channels, rate, start
sample); the slot has room for :data:`MAX_AUDIO_PER_FRAME_S` of it beside
the first frame's pixels, and a longer block (sound the render loop held for
slots it dropped) keeps its latest part: the helper's encoder fills the cut
head with silence, so later sound keeps its place. Before overwriting a buffer the worker
waits, briefly, for the helper to have copied the frame in it; a helper that is
still connecting is not waited for (its frames are dropped and counted, the
latest wins). The node's stats say ``connecting`` until the helper has written
its first frame, then ``running``.

Bounds, all enforced from the engine side (a helper stuck inside FFmpeg cannot
enforce anything): no first frame written within :data:`CONNECT_TIMEOUT_S`
(except a ``listen`` URL, which waits for its peer as long as it takes) or no
progress for :data:`STALL_TIMEOUT_S` while frames are offered: the helper is
killed and the node goes to its error state. On close a connected helper gets
:data:`FINISH_TIMEOUT_S` to flush and close its output; one still connecting
is killed at once (it has nothing to finish). A helper dies with the sink's
worker thread (``PR_SET_PDEATHSIG``), so an engine that is killed leaves no
listener behind.

Helper side (``python -m compositord.daemon.engine.sinks.helper FD``): the
sink's own encoder class (``StreamSink``), driven frame by frame.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from compositord.daemon.engine.audio.bus import BUS_CHANNELS, BUS_SAMPLE_RATE, AudioBlock
from compositord.daemon.engine.frame_slots import FrameSlot
from compositord.daemon.engine.render.frames import OutputFrame
from compositord.daemon.engine.sinks.base import ErrorLatch, Sink, SinkError, SinkFrame, describe

HELPER_MODULE = "compositord.daemon.engine.sinks.helper"
CONNECT_TIMEOUT_S = 10.0
STALL_TIMEOUT_S = 10.0
FINISH_TIMEOUT_S = 5.0
COPY_WAIT_S = 0.5  # how long the worker waits for a connected helper to take the frame it would overwrite
# A helper that failed sends its error, then exits: how long a write that found it gone waits for that report.
LAST_REPORT_WAIT_S = 1.0
DATAGRAM_MAX = 64 * 1024
MAX_AUDIO_PER_FRAME_S = 0.5
AUDIO_BYTES_PER_SAMPLE = 4  # float32, the bus format
AUDIO_ALLOWANCE = int(MAX_AUDIO_PER_FRAME_S * BUS_SAMPLE_RATE) * BUS_CHANNELS * AUDIO_BYTES_PER_SAMPLE
PR_SET_PDEATHSIG = 1


class HelperSink(Sink):
    """Engine side: the node's frames to a helper process that encodes and sends them."""

    counts_writes = False  # frames count as written when the helper says it wrote them
    helper_kind = "sink::stream"  # the encoder class the helper runs (HELPER_ENCODERS)

    def __init__(self, *args: Any, waits_for_peer: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._waits_for_peer = waits_for_peer  # a listen URL: connecting may take as long as the peer does
        self._process: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._slot: FrameSlot | None = None
        self._pixel_bytes = 0  # the first frame's size: the slot holds that much picture and AUDIO_ALLOWANCE of sound
        self._reports: threading.Thread | None = None
        self._state_lock = threading.Condition()
        self._connected = False
        self._written_seq: dict[int, int] = {}  # buffer -> the seq of the frame last written into it
        self._copied_seq: dict[int, int] = {}  # buffer -> the seq the helper last took out of it
        self._helper_error: str | None = None
        self._helper_gone = False
        self._last_progress = time.monotonic()
        self._sent_at: float | None = None  # when the first frame went to the helper
        self.frames_dropped_by_helper = 0
        self.audio: dict[str, Any] | None = None  # the helper's audio stream, as its encoder reports it
        self.audio_blocks_ignored = 0

    def check(self) -> None:
        """Raise SinkError when the params cannot work (runs in the engine, before any helper is started)."""

    # ------------------------------------------------------------------ worker thread

    def open(self, first: SinkFrame) -> None:
        self.check()
        frame = first.frame
        self._pixel_bytes = len(frame.data)
        self._slot = FrameSlot.create(self._pixel_bytes + AUDIO_ALLOWANCE, f"compositord-{self.kind}-{self.node_id}")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", HELPER_MODULE, str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
            )
        finally:
            theirs.close()
        self._sock = ours
        config = {"kind": self.helper_kind, "node_id": self.node_id, "params": self.params, "slot_size": self._slot.size}
        socket.send_fds(ours, [json.dumps(config).encode()], [self._slot.fileno()])
        self._reports = threading.Thread(
            target=self._read_reports, name=f"compositord-{self.kind}-reports({self.node_id})", daemon=True
        )
        self._reports.start()

    def write(self, item: SinkFrame) -> None:
        assert self._slot is not None and self._sock is not None
        self._check_helper()
        frame = item.frame
        if len(frame.data) > self._pixel_bytes:
            raise SinkError(
                f"the output size changed to {frame.width}x{frame.height}; send the node's params again to start a new output"
            )
        sound, audio = audio_in_slot(item.audio, len(frame.data))
        self._wait_for_copy(self._slot.next_buffer)
        buffer, seq = self._slot.write(frame.data, sound)
        with self._state_lock:
            self._written_seq[buffer] = seq
        reference = {
            "buffer": buffer,
            "seq": seq,
            "length": len(frame.data) + len(sound),
            "format": frame.pixel_format,
            "width": frame.width,
            "height": frame.height,
            "matrix": frame.color_matrix,
            "frame_number": frame.frame_number,
            "media_time": item.media_time,
            "fps": item.fps,
            "audio": audio,
        }
        try:
            self._sock.send(json.dumps(reference).encode(), socket.MSG_DONTWAIT)
        except BlockingIOError:
            with self._cond:
                self.frames_dropped += 1  # the helper is not reading (connecting): the latest frame will do
            return
        except OSError as exc:
            raise SinkError(self._why_gone(describe(exc))) from None
        if self._sent_at is None:
            self._sent_at = time.monotonic()

    def _why_gone(self, failure: str) -> str:
        """Why the helper went: its own error, when it sent one before it exited (the reports thread reads
        what is left in the socket, then its end), else ``failure``, what the write ran into."""
        if self._reports is not None:
            self._reports.join(LAST_REPORT_WAIT_S)
        with self._state_lock:
            error = self._helper_error
        return error if error is not None else f"the helper process is gone: {failure}"

    def _wait_for_copy(self, buffer: int) -> None:
        """A connected helper gets a moment to copy the frame this write would overwrite."""
        deadline = time.monotonic() + COPY_WAIT_S
        with self._state_lock:
            while (
                self._connected and not self._helper_gone and self._copied_seq.get(buffer, 0) < self._written_seq.get(buffer, 0)
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._state_lock.wait(remaining)

    def _check_helper(self) -> None:
        """The bounds: raise SinkError (after killing the helper) when it failed, hangs or never connected."""
        now = time.monotonic()
        with self._state_lock:
            error, gone, connected, last = self._helper_error, self._helper_gone, self._connected, self._last_progress
        if error is not None:
            raise SinkError(error)
        if gone:
            raise SinkError(f"the helper process ended ({self._exit_description()})")
        if not connected and not self._waits_for_peer and self._sent_at is not None and now - self._sent_at > CONNECT_TIMEOUT_S:
            self._kill()
            raise SinkError(f"no answer within {CONNECT_TIMEOUT_S:g} s")
        if connected and now - last > STALL_TIMEOUT_S:
            self._kill()
            raise SinkError(f"the peer took no data for {STALL_TIMEOUT_S:g} s")

    def finish(self) -> None:
        process, sock = self._process, self._sock
        if process is None or sock is None:
            return
        try:
            with self._state_lock:
                connected = self._connected and self._helper_error is None
            if connected:
                with contextlib.suppress(OSError):
                    sock.send(b'{"finish": true}', socket.MSG_DONTWAIT)
                try:
                    process.wait(FINISH_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self._kill()
            self._kill()  # still connecting, or it failed: nothing worth waiting for
            process.wait()
            if self._reports is not None:
                self._reports.join(2.0)
        finally:
            sock.close()
            if self._slot is not None:
                self._slot.close()
        with self._state_lock:
            error = self._helper_error
        if error is not None and not self._failed:
            raise SinkError(error)

    def _kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()

    def _exit_description(self) -> str:
        code = self._process.poll() if self._process is not None else None
        if code is None:
            return "still running"
        return f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"

    # ------------------------------------------------------------------ reports thread

    def _read_reports(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(DATAGRAM_MAX)
            except OSError:
                data = b""
            if not data:
                with self._state_lock:
                    self._helper_gone = True
                    self._state_lock.notify_all()
                return
            try:
                report = json.loads(data)
            except ValueError:
                continue
            self._apply(report)

    def _apply(self, report: Mapping[str, Any]) -> None:
        with self._state_lock:
            if "copied" in report:
                self._copied_seq[int(report["buffer"])] = int(report["copied"])
            first = "written" in report and not self._connected
            if "written" in report:
                self.frames_written = int(report["written"])
                self._last_progress = time.monotonic()
                self._connected = True
            if "audio" in report:
                self.audio = report["audio"]
                self.audio_blocks_ignored = int(report.get("audio_blocks_ignored", 0))
            if "dropped" in report:
                self.frames_dropped_by_helper = int(report["dropped"])
            if "error" in report and self._helper_error is None:
                self._helper_error = str(report["error"])
            self._state_lock.notify_all()
        if first:
            self._latch.set(None)

    def stats(self) -> dict[str, Any]:
        stats = super().stats()
        stats["frames_dropped"] += self.frames_dropped_by_helper
        stats["audio"] = self.audio
        stats["audio_blocks_ignored"] = self.audio_blocks_ignored
        if stats["state"] != "error":
            stats["state"] = "running" if self._connected else ("connecting" if self._opened or self._process else "starting")
        return stats


def audio_in_slot(block: AudioBlock | None, offset: int) -> tuple[bytes | memoryview, dict[str, int] | None]:
    """A frame's sound as it rides in the slot after ``offset`` bytes of pixels, and its description."""
    if block is None:
        return b"", None
    most = AUDIO_ALLOWANCE // (block.channels * AUDIO_BYTES_PER_SAMPLE)
    samples, start = block.samples, block.start_sample
    if len(samples) > most:  # keep the latest sound; the encoder fills the head with silence
        start += len(samples) - most
        samples = samples[-most:]
    data = np.ascontiguousarray(samples, dtype=np.float32)
    description = {"offset": offset, "count": len(data), "channels": block.channels, "rate": block.sample_rate, "start": start}
    return data.data.cast("B"), description


def audio_from_slot(data: bytes, description: Mapping[str, Any] | None) -> AudioBlock | None:
    """The helper's side of :func:`audio_in_slot`."""
    if description is None:
        return None
    offset, count, channels = int(description["offset"]), int(description["count"]), int(description["channels"])
    samples = np.frombuffer(data, dtype=np.float32, count=count * channels, offset=offset).reshape(count, channels)
    return AudioBlock(samples, int(description["start"]), int(description["rate"]))


# --------------------------------------------------------------------------- the helper process


def _encoder(kind: str, node_id: str, params: Mapping[str, Any]) -> Sink:
    """The in-process sink class whose open/write/finish the helper drives (never started as a thread here)."""
    if kind == "sink::stream":
        from compositord.daemon.engine.sinks.stream import StreamSink

        return StreamSink(node_id, params, ErrorLatch(node_id, lambda _node, _message: None))
    raise SinkError(f"no helper encoder for {kind}")


def _die_with_parent() -> None:
    """SIGKILL when the thread that started us (the sink's worker) ends: no helper outlives its sink."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:
        os._exit(1)  # the parent was gone before the request took effect


def helper_main(fd: int) -> int:
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine decides when its helpers stop
    sock = socket.socket(fileno=fd)
    message, fds, _flags, _address = socket.recv_fds(sock, DATAGRAM_MAX, 1)
    if not fds:
        return 2
    config = json.loads(message)
    slot = FrameSlot.attach(fds[0], int(config["slot_size"]))

    def report(**fields: Any) -> None:
        sock.send(json.dumps(fields).encode())

    encoder: Sink | None = None
    opened = False
    written = dropped = 0
    try:
        encoder = _encoder(str(config["kind"]), str(config["node_id"]), config["params"])
        while True:
            data = sock.recv(DATAGRAM_MAX)
            if not data:
                break  # the engine is gone: finish what was written
            reference = json.loads(data)
            if reference.get("finish"):
                break
            pixels = slot.read(int(reference["buffer"]), int(reference["seq"]), int(reference["length"]))
            report(copied=reference["seq"], buffer=reference["buffer"])
            if pixels is None:
                dropped += 1  # overwritten while this helper was busy: a newer frame follows
                report(dropped=dropped)
                continue
            audio = reference.get("audio")
            picture_length = int(audio["offset"]) if audio else len(pixels)
            frame = OutputFrame(
                reference["format"],
                int(reference["width"]),
                int(reference["height"]),
                pixels[:picture_length],
                reference["matrix"],
                int(reference["frame_number"]),
            )
            item = SinkFrame(frame, float(reference["media_time"]), int(reference["fps"]), audio_from_slot(pixels, audio))
            if not opened:
                encoder.open(item)  # the call that may block, GIL and all: only this process waits
                opened = True
            encoder.write(item)
            written += 1
            encoded = encoder.stats()
            report(written=written, audio=encoded.get("audio"), audio_blocks_ignored=encoded.get("audio_blocks_ignored", 0))
        encoder.finish()
        return 0
    except Exception as exc:
        with contextlib.suppress(OSError):
            report(error=describe(exc))
        if encoder is not None:
            with contextlib.suppress(Exception):  # the error reported above is what the node shows
                encoder.finish()
        return 1
    finally:
        slot.close()
        sock.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print(f"usage: python -m {HELPER_MODULE} FD  (started by an engine, not by hand)", file=sys.stderr)
        return 2
    return helper_main(int(args[0]))


if __name__ == "__main__":
    sys.exit(main())
