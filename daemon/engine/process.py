"""An engine process: one session's render loop, sources and sinks, steered over a socket.

``python -m compositord.daemon.engine.process FD`` is started by the control
process (``daemon/control/engine_client.py``) with ``FD``, its end of a
private ``socket.socketpair``, inherited. The first message on it is a
``wire.EngineConfig``; then commands and pushed-frame references come in, and
events go out (``wire`` frames them; ``frame_slots`` carries the pixels).

Threads, and why nothing here can hold up the render thread:

- the *render thread* is the in-process ``RenderLoop``, unchanged: it emits
  into its bounded, coalescing outbox (the latest event per node and kind) and
  hands the outbox over with ``SocketDelivery.run_sync_soon``. When nothing
  else is being written, that writes the outbox itself, without waiting
  (``MSG_DONTWAIT``): a frame's events then leave at its end, with no thread
  to wake and no hand-over of the GIL. What the socket does not take at once
  (the control process is busy) is left to the writer thread;
- the *writer thread* finishes those writes, and takes the outbox while one is
  in progress, waiting for the socket as long as it must. While a write
  blocks, newer events replace older ones in the outbox, exactly as on a busy
  trio thread in-process;
- the *main thread* reads the socket: commands go to ``RenderLoop.submit``
  (its inbox coalesces them), pushed frames are copied out of their slot into
  the node's one-frame handoff (``RenderLoop.push_frame``), pushed audio is
  queued for its node's converter thread (``RenderLoop.push_audio``).

What arrives waits in the socket until a thread takes it, and while frames
come at least every :data:`READ_AT_FRAME_START_MAX_INTERVAL` it is the *render
thread* that does, at each frame's start, before it takes its inbox
(``EngineMain.read_waiting``, the loop's ``before_latch``): the main thread
then waits only for the end of the stream (``POLLRDHUP``), which data does not
wake. Why: everything a frame can use is whatever arrived before it starts,
and reading it there costs no wake-up per command and no hand-over of the GIL.
A reader thread woken by each command needed the GIL, which the render thread
takes at a frame's start; a command that arrived just before a frame then
waited for the next one (at (1, 1), 1-3 % of the tunes, each a frame period
late), and at 600 tunes a second each one woke the engine. A slower loop (no
compositor: ``IDLE_FPS``) would keep a command waiting, so then the main thread
reads as it arrives. Both threads read without blocking and under one lock, so
messages are handled in the order they came.

A command being prepared is waited for. The control process announces each
tune before it parses the tune's params, checks them and stores them
(``wire.CommandComing``); its ``ParamsUpdate`` settles it, and a refusal sends
``wire.CommandSettled``. A frame that starts meanwhile waits for it, at most
:data:`COMING_WAIT_MAX_S` or a sixteenth of its frame interval, polling the
socket (the GIL is free meanwhile); then it forgets what is still announced, so
an announcement whose command comes late costs one wait, never more. The in-process loop does the
same by itself: its frame waits for the GIL while the trio thread prepares the
command. Without it a tune had to have gone through the whole preparation
(about 0.7 ms at (1, 1) here) before the frame's start, and the engine
process added that much to tune -> view ack compared with the in-process loop.

The engine stops, finishing its sinks' files, on ``api.Stop``, when the
control process closes the socket (it exited or was killed), or on SIGTERM
(systemd's ``KillMode=control-group`` sends it to every process of the
service). SIGINT is ignored: a Ctrl-C in a terminal reaches the whole process
group, and the control process decides when its engines stop. A stop is
bounded by ``signal.alarm``: SIGALRM has no handler here, so the kernel ends a
process that did not finish in time, whatever its threads are stuck in.
"""

from __future__ import annotations

import array
import contextlib
import importlib
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from compositord.daemon.engine import api, wire
from compositord.daemon.engine.frame_slots import FrameSlot
from compositord.daemon.engine.loop import SINK_CLOSE_TIMEOUT, DeliveryClosed, RenderLoop
from compositord.daemon.heap import freeze_startup_objects

log = logging.getLogger("compositord.engine")

CONFIG_TIMEOUT = 30.0  # seconds to wait for the first message before giving up
STOP_DEADLINE = int(SINK_CLOSE_TIMEOUT) + 5  # seconds from the start of a stop to the kernel ending the process
READ_SIZE = 256 * 1024
READS_BEFORE_LATCH = 16  # at most this many reads of READ_SIZE at a frame's start; the next frame takes the rest
# While frames come at least this often (seconds), the render thread reads the socket at each frame's start.
READ_AT_FRAME_START_MAX_INTERVAL = 0.05
POLL_RECHECK_MS = 250  # the main thread looks again at the frame rate this often
# A frame's start waits at most this long (and at most a sixteenth of the frame interval) for announced commands.
COMING_WAIT_MAX_S = 0.001
GIL_SWITCH_INTERVAL_S = 0.001
PREVIEW_SLOT_MIN = 256 * 1024  # bytes; a preview slot grows (a new slot) when a thumbnail does not fit


class SocketDelivery:
    """The render loop's ``Delivery`` in an engine process: a round (the handed-over function, then
    ``after_round``) runs at once on the caller's thread when no other round is running or unfinished,
    and otherwise on the writer thread (:meth:`run`), in the order handed over.

    ``after_round(wait)`` writes what the round made. On the caller's thread it gets ``wait=False``: it must
    not block, and returns False when the socket did not take everything; the writer thread then finishes
    (``after_round(True)``) before any later round runs.
    """

    def __init__(self, after_round: Callable[[bool], bool] | None = None) -> None:
        self._cond = threading.Condition()
        self._pending: list[Callable[[], object]] = []  # at most one per loop: the loop schedules one delivery at a time
        self._closed = False
        self._busy = False  # a round is running, on the writer thread or on a caller's
        self._unfinished = False  # a caller's round left bytes the socket did not take: the writer writes them first
        self._after_round = after_round

    def run_sync_soon(self, sync_fn: Callable[[], object]) -> None:
        with self._cond:
            if self._closed:
                raise DeliveryClosed("the control process is gone")
            if self._busy or self._pending or self._unfinished:
                self._pending.append(sync_fn)  # behind what is being written
                self._cond.notify()
                return
            self._busy = True
        finished = False
        try:
            sync_fn()
            finished = self._after_round is None or self._after_round(False)
        finally:
            with self._cond:
                self._busy = False
                self._unfinished = not finished
                if self._unfinished or self._pending or self._closed:
                    self._cond.notify()  # only then: an idle writer is not woken by every frame

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def run(self) -> None:
        """The writer thread: run what was handed over until closed (then once more, for the last events)."""
        while True:
            with self._cond:
                while self._busy or not (self._pending or self._unfinished or self._closed):
                    self._cond.wait()
                pending, self._pending = self._pending, []
                self._unfinished = False
                closed = self._closed
                self._busy = True
            try:
                for fn in pending:
                    fn()
                if self._after_round is not None:
                    self._after_round(True)
            finally:
                with self._cond:
                    self._busy = False
            if closed and not pending:
                return


class SocketEvents:
    """The loop's ``EngineEvents`` sink: events become frames on the socket (one delivery round at a time,
    ``SocketDelivery`` sees to that).

    A delivery's events (a frame's view data, stats and its end) leave in one write at :meth:`flush`: each
    write wakes the control process, and one wake-up per frame is what it needs.
    """

    def __init__(self, sock: socket.socket, statistics: Callable[[], api.EngineStatistics]) -> None:
        self._sock = sock
        self._statistics = statistics
        # Frames not written yet, in order, each with the descriptor that goes with its first byte (or None): a
        # duplicate, ours to close once sent, so that the slot may be replaced meanwhile.
        self._unsent: list[tuple[bytes, int | None]] = []
        self._broken = False
        self.failed = False  # the loop reported api.Failed
        self._preview_slots: dict[str, tuple[int, FrameSlot]] = {}  # node -> (slot id, slot)
        self._next_slot_id = 1

    def on_event(self, event: api.Event) -> None:
        if self._broken:
            return
        try:
            if isinstance(event, api.FrameEnded):
                self._send(wire.Progress(self._statistics()))
            elif isinstance(event, api.PreviewUpdated):
                self._send_preview(event)
            else:
                self._send(event)
            if isinstance(event, api.Failed):
                # The render thread is gone for good: stop reading commands, so the main thread ends the process
                # (reading only: the round's flush still writes this).
                self.failed = True
                self._sock.shutdown(socket.SHUT_RD)
        except OSError as exc:
            self._lost(exc)

    def flush(self, wait: bool = True) -> bool:
        """Write what this delivery's events made, in one write where no descriptor goes with it. Without
        ``wait``, only what the socket takes now; False when some is left for a flush that waits."""
        flags = 0 if wait else socket.MSG_DONTWAIT
        while self._unsent and not self._broken:
            data, fd = self._unsent[0]
            if fd is None:
                plain = 1  # the run of frames without a descriptor goes in one write
                while plain < len(self._unsent) and self._unsent[plain][1] is None:
                    plain += 1
                if plain > 1:
                    data = b"".join(chunk for chunk, _ in self._unsent[:plain])
                    self._unsent[:plain] = [(data, None)]
            try:
                if fd is None:
                    sent = self._sock.send(data, flags)
                else:
                    rights = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
                    sent = self._sock.sendmsg([data], rights, flags)
            except BlockingIOError:
                return False
            except OSError as exc:
                self._lost(exc)
                break
            if fd is not None:
                os.close(fd)  # it went with the first byte
            if sent < len(data):
                self._unsent[0] = (data[sent:], None)
            else:
                del self._unsent[0]
        return True

    def _lost(self, exc: OSError) -> None:
        # The control process is gone: nothing to tell any more. The main thread sees EOF and stops the loop.
        self._broken = True
        self._drop_unsent()
        log.warning("engine: cannot write to the control process: %s", exc)

    def _send_preview(self, event: api.PreviewUpdated) -> None:
        image = event.image
        found = self._preview_slots.get(event.node_id)
        if found is None or found[1].capacity < len(image.jpeg):
            if found is not None:
                self._send(wire.SlotClosed(found[0]))
                found[1].close()
            slot = FrameSlot.create(max(PREVIEW_SLOT_MIN, 2 * len(image.jpeg)), f"compositord-preview-{event.node_id}")
            found = self._preview_slots[event.node_id] = (self._next_slot_id, slot)
            self._next_slot_id += 1
            self._send(wire.SlotOpened(found[0], slot.size), fd=slot.fileno())
        slot_id, slot = found
        buffer, seq = slot.write(image.jpeg)
        self._send(
            wire.PreviewRef(
                event.node_id,
                slot_id,
                buffer,
                seq,
                len(image.jpeg),
                image.width,
                image.height,
                image.frame_number,
                image.media_time,
                image.timestamp,
            )
        )

    def _send(self, message: wire.Message, fd: int | None = None) -> None:
        self._unsent.append((wire.encode(message), None if fd is None else os.dup(fd)))

    def _drop_unsent(self) -> None:
        for _, fd in self._unsent:
            if fd is not None:
                os.close(fd)
        self._unsent.clear()

    def close(self) -> None:
        self._drop_unsent()
        for _, slot in self._preview_slots.values():
            slot.close()
        self._preview_slots.clear()


class EngineMain:
    """The main thread's part: read the socket, feed the loop, stop it. The render thread reads too, at each
    frame's start (:meth:`read_waiting`); the read lock keeps the messages in order."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = wire.FrameReader()
        self._push_slots: dict[int, FrameSlot] = {}
        self._pending: list[wire.Message] = []
        # Held while a thread reads the socket and hands what it read to the loop: messages are handled in the
        # order they came, whichever thread read them.
        self._read_lock = threading.Lock()
        self._ended = False  # under the read lock: Stop or the end of the stream was read
        self._coming = 0  # under the read lock: commands announced (wire.CommandComing) and not settled yet
        self._frame_start_poller = select.poll()  # the render thread's, for the wait for announced commands
        self._frame_start_poller.register(sock, select.POLLIN)
        self._read_failure: Exception | None = None  # what the render thread's read raised, for the main thread
        self.frames_unreadable = 0  # pushed frames overwritten before they were copied out (latest wins)

    def _read_messages(self, flags: int = 0) -> list[wire.Message] | None:
        """The next messages from the socket; None at end of file."""
        data, ancillary, _flags, _address = self._sock.recvmsg(READ_SIZE, socket.CMSG_SPACE(wire.MAX_FDS_PER_READ * 4), flags)
        fds = wire.received_fds(ancillary)
        if not data and not fds:
            return None
        return self._reader.feed(data, fds)

    def read_config(self) -> wire.EngineConfig:
        self._sock.settimeout(CONFIG_TIMEOUT)
        try:
            while True:
                messages = self._read_messages()
                if messages is None:
                    raise wire.WireError("the control process closed the socket before configuring the engine")
                if messages:
                    first, *self._pending = messages
                    if not isinstance(first, wire.EngineConfig):
                        raise wire.WireError(f"the first message is a {type(first).__name__}, not an EngineConfig")
                    return first
        finally:
            self._sock.settimeout(None)

    def serve(self, loop: RenderLoop) -> None:
        """Until Stop or end of file: every message to the loop."""
        with self._read_lock:
            self._handle_all(loop, self._pending)
            self._pending = []
        poller = select.poll()
        poller.register(self._sock, select.POLLIN)
        while True:
            with self._read_lock:
                if self._ended:
                    break
            render_thread_reads = loop.frame_interval <= READ_AT_FRAME_START_MAX_INTERVAL
            poller.modify(self._sock, select.POLLRDHUP if render_thread_reads else select.POLLIN)
            if not poller.poll(POLL_RECHECK_MS):  # the GIL is free meanwhile
                continue
            with self._read_lock:
                if not self._ended:
                    self._read_and_handle(loop)
        if self._read_failure is not None:
            raise self._read_failure

    def read_waiting(self, loop: RenderLoop) -> None:
        """Render thread, at a frame's start: hand the loop what waits in the socket, and what is announced and
        arrives within the wait (the module's docstring says why)."""
        deadline = time.monotonic() + min(COMING_WAIT_MAX_S, loop.frame_interval / 16)
        with self._read_lock:
            try:
                for _ in range(READS_BEFORE_LATCH):
                    if self._ended:
                        return
                    if self._read_and_handle(loop):
                        continue
                    wait_ms = (deadline - time.monotonic()) * 1000.0
                    if not self._coming or wait_ms <= 0:
                        break
                    self._frame_start_poller.poll(wait_ms)
                self._coming = 0
            except (OSError, wire.WireError) as exc:
                # The main thread ends the engine as if it had read this itself.
                self._read_failure = exc
                self._end()

    def _read_and_handle(self, loop: RenderLoop) -> bool:
        """One read without waiting, handled (read lock held); False when nothing waited or the stream ended."""
        try:
            messages = self._read_messages(socket.MSG_DONTWAIT)
        except BlockingIOError:
            return False  # the other thread took it
        if messages is None:
            self._ended = True
            return False
        return self._handle_all(loop, messages)

    def _handle_all(self, loop: RenderLoop, messages: list[wire.Message]) -> bool:
        """Every message to the loop, up to a Stop (then nothing more is read); False after a Stop."""
        for message in messages:
            if isinstance(message, api.Stop):
                self._end()
                return False
            self._handle(loop, message)
        return True

    def _end(self) -> None:
        """Stop reading (read lock held). Shutting the socket's reading side wakes the main thread's poll."""
        self._ended = True
        with contextlib.suppress(OSError):  # already closed or shut: the main thread sees the end anyway
            self._sock.shutdown(socket.SHUT_RD)

    def _handle(self, loop: RenderLoop, message: wire.Message) -> None:
        if isinstance(message, wire.PushedFrameRef):
            slot = self._push_slots.get(message.slot_id)
            data = slot.read(message.buffer, message.seq, message.length) if slot is not None else None
            if data is None:
                self.frames_unreadable += 1
                loop.push_frame_lost(message.node_id)
                return
            loop.push_frame(
                api.PushedFrame(message.node_id, message.width, message.height, message.pixel_format, message.pts_us, data)
            )
        elif isinstance(message, wire.CommandComing):
            self._coming += 1
        elif isinstance(message, wire.CommandSettled):
            self._coming = max(0, self._coming - 1)
        elif isinstance(message, api.PushedAudio):
            loop.push_audio(message)
        elif isinstance(message, wire.SlotOpened):
            self._push_slots[message.slot_id] = FrameSlot.attach(self._reader.take_fd(), message.size)
        elif isinstance(message, wire.SlotClosed):
            closed = self._push_slots.pop(message.slot_id, None)
            if closed is not None:
                closed.close()
        elif isinstance(message, api.Command) and not isinstance(message, api.Stop):
            if isinstance(message, api.ParamsUpdate):
                self._coming = max(0, self._coming - 1)  # an announced tune's command settles it
            loop.submit(message)
        else:
            raise wire.WireError(f"an engine does not take a {type(message).__name__}")

    def close(self) -> None:
        for slot in self._push_slots.values():
            slot.close()
        self._push_slots.clear()
        for fd in self._reader.close():
            os.close(fd)


def _output_listener(config: wire.EngineConfig) -> Callable[[str, Any], None] | None:
    if not config.output_listener:
        return None
    module_name, _, function_name = config.output_listener.partition(":")
    make = getattr(importlib.import_module(module_name), function_name)
    listener: Callable[[str, Any], None] = make(config.listener_argument)
    return listener


def run_engine(sock: socket.socket) -> int:
    """The engine's whole life on an open socket; the exit status."""
    main = EngineMain(sock)
    config = main.read_config()
    loop_holder: list[RenderLoop] = []
    events = SocketEvents(sock, lambda: loop_holder[0].statistics())
    delivery = SocketDelivery(after_round=events.flush)
    loop = RenderLoop(
        config.session,
        events,
        delivery=delivery,
        before_latch=lambda: main.read_waiting(loop_holder[0]),
        asset_dir=Path(config.asset_dir),
        output_dir=Path(config.output_dir) if config.output_dir is not None else None,
        device_index=config.device_index,
        listen_hosts=config.listen_hosts,
        min_free_disk_bytes=config.min_free_disk_bytes,
    )
    loop_holder.append(loop)
    listener = _output_listener(config)
    if listener is not None:
        loop.add_output_listener(listener)
    writer = threading.Thread(target=delivery.run, name="compositord-engine-writer", daemon=True)
    writer.start()
    try:
        loop.start()
        main.serve(loop)
    except _Terminated:
        log.info("engine %s: SIGTERM: finishing", config.session.session_id)
    except OSError as exc:
        log.warning("engine %s: reading from the control process failed: %s", config.session.session_id, exc)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the drain short
        signal.alarm(STOP_DEADLINE)  # from here on the process ends in time, whatever hangs
        loop.stop(timeout=SINK_CLOSE_TIMEOUT + 1.0)
        delivery.close()
        writer.join(2.0)
        events.close()
        main.close()
    return 1 if events.failed else 0


class _Terminated(Exception):
    """SIGTERM arrived: stop as for api.Stop."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise _Terminated()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not args[0].isdigit():
        print("usage: python -m compositord.daemon.engine.process FD  (started by the daemon, not by hand)", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=os.environ.get("COMPOSITORD_ENGINE_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d]: %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # A command that arrives while the render thread runs Python waits for the GIL up to the switch
    # interval (5 ms by default) before the reader thread can hand it over; 1 ms keeps that wait below
    # a frame's slack at 240 fps, at the cost of a few more GIL hand-overs while the reader is waiting.
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
    sock = socket.socket(fileno=int(args[0]))
    started = time.monotonic()
    freeze_startup_objects()  # the imports are done and no session exists yet
    try:
        return run_engine(sock)
    except _Terminated:
        return 0  # before the engine was configured: nothing to finish
    except wire.WireError as exc:
        log.error("engine: %s (after %.1f s)", exc, time.monotonic() - started)
        return 3
    finally:
        sock.close()


if __name__ == "__main__":
    sys.exit(main())
