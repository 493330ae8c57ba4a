"""The control process's side of one engine process: start it, talk to it over its socket, end it.

:class:`EngineProcess` starts ``python -m compositord.daemon.engine.process``
with its end of a private ``socket.socketpair`` and speaks ``engine.wire`` to
it: commands out through a bounded queue that one task writes to the socket,
events in through a task that reads them and hands each to the
``api.EngineEvents`` sink on the trio thread. Pushed frames go into a
shared-memory slot per ``video::push`` node (``engine.frame_slots``), and only
a reference to them crosses the socket; preview JPEGs come back the same way.
Pushed audio crosses the socket whole, in order (``engine.wire`` says why);
what of it waits for the socket is bounded per engine
(:data:`AUDIO_IN_FLIGHT_MESSAGES`, :data:`AUDIO_IN_FLIGHT_BYTES`): past it a
message is dropped and counted (``audio_not_pushed``), so a flood of audio
never fills the command queue, whose overflow means a hung engine.

Nothing here waits on the engine while handling a call: ``submit`` and
``push_frame`` queue and return. When the queue is full the engine has stopped
reading (it hangs), and :attr:`EngineProcess.trouble` says so; the supervisor
(``sessions/supervisor.py``) decides what happens then, as it does when the
engine exits or stops reporting frames. This module imports only the engine's
plain-data modules (``api``, ``wire``, ``frame_slots``): no GL, no media.
"""

from __future__ import annotations

import array
import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import trio

from compositord.daemon.engine import api, wire
from compositord.daemon.engine.frame_slots import FrameSlot

log = logging.getLogger(__name__)

ENGINE_MODULE = "compositord.daemon.engine.process"
# Messages waiting for the socket. Commands coalesce in the engine, so it drains them at once; a full
# queue means the engine stopped reading (a hang), which is trouble, not a reason to wait or drop.
COMMAND_QUEUE_CAPACITY = 4096
READ_SIZE = 256 * 1024
# At most about this many bytes of queued messages go to the engine in one write.
WRITE_BATCH_BYTES = 256 * 1024
# Pushed audio waiting for the socket, per engine: about 2.5 s of 48 kHz stereo float from 8 clients at once.
AUDIO_IN_FLIGHT_MESSAGES = 512
AUDIO_IN_FLIGHT_BYTES = 8 * 1024 * 1024


_COMMAND_COMING = wire.encode(wire.CommandComing())
_COMMAND_SETTLED = wire.encode(wire.CommandSettled())

# A message waiting for the socket: its frame, the slot whose descriptor goes with it, a slot to close once it is
# sent, and the bytes of pushed audio it carries (0 for anything else).
_Queued = tuple[bytes, FrameSlot | None, FrameSlot | None, int]


@dataclass
class _PushSlot:
    slot_id: int
    slot: FrameSlot


class EngineProcess:
    """One engine process of one session. :meth:`run` starts it and returns once it has exited."""

    def __init__(self, config: wire.EngineConfig, events: api.EngineEvents, *, environ: Mapping[str, str] | None = None) -> None:
        self.session_id = config.session.session_id
        self._events = events
        self._environ = dict(os.environ if environ is None else environ)
        self._queue_in, self._queue_out = trio.open_memory_channel[_Queued](COMMAND_QUEUE_CAPACITY)
        # The socket to the engine, set while the writer waits with nothing queued: a command then leaves at
        # once, from the task that submits it. Through the writer task it waited for a turn of the scheduler,
        # behind every connection's reads at 100 clients: view-ack p99 at (100, 10) 49-102 ms against
        # 34-57 ms sent at once (perf/README.md). Pushed frames, audio and descriptors still go through the
        # writer, which also batches whatever queued while a write was in progress.
        self._idle_socket: socket.socket | None = None
        self.process: trio.Process | None = None
        self.spawned_at = time.monotonic()
        self.last_frame_end: float | None = None  # time.monotonic() of the last frame end reported
        self.statistics = api.EngineStatistics(0, 0, 0, 0)
        self.settled = trio.Event()  # the first frame was rendered, or the engine failed or exited first
        self.ended = trio.Event()  # run() is over: the process has exited and the socket is closed
        self.started = False
        self.failure: str | None = None  # the engine's own Failed message
        self.trouble: str | None = None  # why it must be ended although it may still run
        self.trouble_event = trio.Event()
        self.frames_not_pushed = 0  # pushed frames dropped because the engine was not reachable
        self.audio_not_pushed = 0  # pushed audio dropped: the engine was not reachable, or too much waited for it
        self._audio_in_flight = 0  # messages of pushed audio queued, not written yet
        self._audio_in_flight_bytes = 0
        self._previews: dict[str, api.PreviewImage] = {}
        self._push_slots: dict[str, _PushSlot] = {}
        self._preview_slots: dict[int, FrameSlot] = {}
        self._next_slot_id = 1
        self._reader = wire.FrameReader()
        self._closed = False
        # The configuration is the first message; commands submitted before the process runs queue behind it.
        self._enqueue(wire.encode(config))

    # ------------------------------------------------------------------ life

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the engine process; ``started`` once it runs; return once it has exited (killing it
        first when this task is cancelled)."""
        parent_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            environ = dict(self._environ)
            environ.setdefault("COMPOSITORD_ENGINE_LOG_LEVEL", logging.getLevelName(logging.getLogger().getEffectiveLevel()))
            self.process = await trio.lowlevel.open_process(
                [sys.executable, "-m", ENGINE_MODULE, str(child_end.fileno())],
                pass_fds=(child_end.fileno(),),
                stdin=subprocess.DEVNULL,
                env=environ,
            )
        except BaseException as exc:
            parent_end.close()
            self._closed = True
            self.failure = f"cannot start an engine process: {exc}"
            self.settled.set()
            self.ended.set()
            raise
        finally:
            child_end.close()
        self.spawned_at = time.monotonic()
        sock = trio.socket.from_stdlib_socket(parent_end)
        log.info("session %s: engine process %d started", self.session_id, self.process.pid)
        try:
            task_status.started()
            async with trio.open_nursery() as nursery:
                parent_end.setblocking(False)
                nursery.start_soon(self._write_loop, sock, parent_end)
                await self._read_loop(sock)
                # The engine closed its end: it exits (or hangs on its way out, which the supervisor ends).
                await self.process.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                if self.process.returncode is None:
                    self.process.kill()
                    await self.process.wait()
                self._close(sock)
                if not self.settled.is_set():
                    self.failure = self.failure or f"the engine process exited ({self.exit_description()}) before its first frame"
                    self.settled.set()
                self.ended.set()

    def kill(self) -> None:
        """SIGKILL, at once (a hung engine finishes nothing anyway)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    def terminate(self) -> None:
        """SIGTERM: the engine finishes its sinks' files and exits (``engine.process``)."""
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def exited(self) -> bool:
        return self.process is not None and self.process.returncode is not None

    def exit_description(self) -> str:
        code = self.process.returncode if self.process is not None else None
        if code is None:
            return "still running"
        if code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit status {code}"

    def rss_bytes(self) -> int | None:
        """Resident memory of the engine process (``/proc/PID/statm``), or None when it is gone."""
        pid = self.pid
        if pid is None or self.exited:
            return None
        try:
            with open(f"/proc/{pid}/statm", encoding="ascii") as statm:
                resident_pages = int(statm.read().split()[1])
        except (OSError, ValueError, IndexError):
            return None
        return resident_pages * os.sysconf("SC_PAGE_SIZE")

    # ------------------------------------------------------------------ commands (trio thread)

    def submit(self, command: api.Command) -> None:
        self._enqueue(wire.encode(command))

    def command_coming(self) -> None:
        self._enqueue(_COMMAND_COMING)

    def command_settled(self) -> None:
        self._enqueue(_COMMAND_SETTLED)

    def push_frame(self, frame: api.PushedFrame) -> None:
        """Copy the pixels into the node's slot (made, or made bigger, on demand) and queue the reference."""
        if self._closed or self.trouble is not None:
            self.frames_not_pushed += 1
            return
        length = len(frame.data)
        entry = self._push_slots.get(frame.node_id)
        if entry is None or entry.slot.capacity < length:
            replaced = entry.slot if entry is not None else None
            if entry is not None:
                self._enqueue(wire.encode(wire.SlotClosed(entry.slot_id)), close_after=replaced)
            slot = FrameSlot.create(length, f"compositord-push-{frame.node_id}")
            entry = self._push_slots[frame.node_id] = _PushSlot(self._new_slot_id(), slot)
            self._enqueue(wire.encode(wire.SlotOpened(entry.slot_id, slot.size)), fd_of=slot)
        buffer, seq = entry.slot.write(frame.data)
        self._enqueue(
            wire.encode(
                wire.PushedFrameRef(
                    frame.node_id, frame.width, frame.height, frame.pixel_format, frame.pts_us, entry.slot_id, buffer, seq, length
                )
            )
        )

    def push_audio(self, audio: api.PushedAudio) -> None:
        """Queue the PCM for the socket, unless the engine is unreachable or too much audio waits already."""
        size = len(audio.data)
        if (
            self._closed
            or self.trouble is not None
            or self._audio_in_flight >= AUDIO_IN_FLIGHT_MESSAGES
            or self._audio_in_flight_bytes + size > AUDIO_IN_FLIGHT_BYTES
        ):
            self.audio_not_pushed += 1
            return
        if isinstance(audio.data, memoryview):
            audio = dataclasses.replace(audio, data=bytes(audio.data))  # pickle takes bytes, not a view
        self._audio_in_flight += 1
        self._audio_in_flight_bytes += size
        if not self._enqueue(wire.encode(audio), audio_bytes=size):
            self._audio_in_flight -= 1
            self._audio_in_flight_bytes -= size
            self.audio_not_pushed += 1

    def preview(self, node_id: str) -> api.PreviewImage | None:
        return self._previews.get(node_id)

    def previews(self) -> dict[str, api.PreviewImage]:
        """The latest thumbnail of every ``sink::preview`` node that made one."""
        return dict(self._previews)

    def _new_slot_id(self) -> int:
        self._next_slot_id += 1
        return self._next_slot_id - 1

    def _enqueue(
        self, data: bytes, *, fd_of: FrameSlot | None = None, close_after: FrameSlot | None = None, audio_bytes: int = 0
    ) -> bool:
        """Queue one message for the socket; False when it was not queued."""
        if self._closed or self.trouble is not None:
            if close_after is not None:
                close_after.close()
            return False
        if self._idle_socket is not None and fd_of is None and close_after is None and not audio_bytes:
            try:
                sent = self._idle_socket.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                return False  # the engine is gone: the read loop sees the end and the supervisor the exit
            if sent == len(data):
                return True
            data = data[sent:]  # the rest goes first, through the writer (nothing else is queued)
        self._idle_socket = None  # from now until the writer has written this, nothing may overtake it
        try:
            self._queue_in.send_nowait((data, fd_of, close_after, audio_bytes))
        except trio.WouldBlock:
            if close_after is not None:
                close_after.close()
            self._declare_trouble(f"it stopped reading its commands ({COMMAND_QUEUE_CAPACITY} waiting)")
            return False
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            if close_after is not None:
                close_after.close()
            return False
        return True

    def _declare_trouble(self, reason: str) -> None:
        if self.trouble is None:
            self.trouble = reason
            self.trouble_event.set()

    # ------------------------------------------------------------------ socket tasks

    async def _write_loop(self, sock: trio.socket.SocketType, raw: socket.socket) -> None:
        held: _Queued | None = None  # taken from the queue but left for the next write: it carries a descriptor
        try:
            while True:
                queued, held = held, None
                if queued is None:
                    try:
                        queued = self._queue_out.receive_nowait()
                    except trio.WouldBlock:
                        pass
                    except trio.EndOfChannel:
                        return
                if queued is None:
                    self._idle_socket = raw  # a command may now leave at once, from the task that submits it
                    try:
                        queued = await self._queue_out.receive()
                    except trio.EndOfChannel:
                        return
                    finally:
                        self._idle_socket = None
                first = queued
                batch, held = write_batch(first, self._queue_out)
                view = memoryview(b"".join(queued[0] for queued in batch))
                fd_of = first[1]
                if fd_of is not None:
                    sent = await sock.sendmsg(
                        [view], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd_of.fileno()]))]
                    )
                    view = view[sent:]
                while view:
                    sent = await sock.send(view)
                    view = view[sent:]
                for _data, _fd_of, close_after, audio_bytes in batch:
                    if close_after is not None:
                        close_after.close()
                    if audio_bytes:
                        self._audio_in_flight -= 1
                        self._audio_in_flight_bytes -= audio_bytes
        except OSError as exc:
            # The engine is gone or going; the read loop sees the end and the supervisor the exit.
            log.debug("session %s: writing to the engine failed: %s", self.session_id, exc)

    async def _read_loop(self, sock: trio.socket.SocketType) -> None:
        ancillary_size = socket.CMSG_SPACE(wire.MAX_FDS_PER_READ * array.array("i").itemsize)
        while True:
            try:
                data, ancillary, _flags, _address = await sock.recvmsg(READ_SIZE, ancillary_size)
            except OSError as exc:
                log.debug("session %s: reading from the engine failed: %s", self.session_id, exc)
                return
            fds = wire.received_fds(ancillary)
            if not data and not fds:
                return
            try:
                messages = self._reader.feed(data, fds)
                for message in messages:
                    self._handle(message)
            except wire.WireError as exc:
                self._declare_trouble(f"it sent what is not a message: {exc}")
                return

    def _handle(self, message: wire.Message) -> None:
        if isinstance(message, wire.Progress):
            self.statistics = message.statistics
            self.last_frame_end = time.monotonic()
            self._events.on_event(api.FrameEnded(self.session_id))
        elif isinstance(message, wire.PreviewRef):
            slot = self._preview_slots.get(message.slot_id)
            jpeg = slot.read(message.buffer, message.seq, message.length) if slot is not None else None
            if jpeg is None:
                return  # overwritten by a newer thumbnail, whose reference follows
            image = api.PreviewImage(
                jpeg, message.width, message.height, message.frame_number, message.media_time, message.timestamp
            )
            self._previews[message.node_id] = image
            self._events.on_event(api.PreviewUpdated(self.session_id, message.node_id, image))
        elif isinstance(message, wire.SlotOpened):
            self._preview_slots[message.slot_id] = FrameSlot.attach(self._reader.take_fd(), message.size)
        elif isinstance(message, wire.SlotClosed):
            closed = self._preview_slots.pop(message.slot_id, None)
            if closed is not None:
                closed.close()
        elif isinstance(message, _ENGINE_EVENTS):
            if message.session_id != self.session_id:
                raise wire.WireError(f"a {type(message).__name__} of another session ({message.session_id!r})")
            if isinstance(message, (api.Started, api.Failed)):
                self._settle(message)
            self._events.on_event(message)
        else:
            raise wire.WireError(f"an engine does not send a {type(message).__name__}")

    def _settle(self, message: api.Event) -> None:
        if isinstance(message, api.Started):
            self.started = True
        elif isinstance(message, api.Failed):
            self.failure = message.message
        self.settled.set()

    def _close(self, sock: trio.socket.SocketType) -> None:
        self._closed = True
        self._queue_in.close()
        sock.close()
        for entry in self._push_slots.values():
            entry.slot.close()
        self._push_slots.clear()
        for slot in self._preview_slots.values():
            slot.close()
        self._preview_slots.clear()
        for fd in self._reader.close():
            os.close(fd)


def write_batch(first: _Queued, queue: trio.MemoryReceiveChannel[_Queued]) -> tuple[list[_Queued], _Queued | None]:
    """``first`` and what is queued behind it, for one write, and the message taken that must start the
    next write, if any. Each write wakes the engine's reader, so what queued while the writer waited for
    its turn leaves together (a command that finds the writer idle leaves at once instead, see
    ``EngineProcess._enqueue``). A message with a descriptor starts a write of its own, so that the descriptor arrives
    with its message's first byte; a batch stops after about ``WRITE_BATCH_BYTES``."""
    batch = [first]
    size = len(first[0])
    while size < WRITE_BATCH_BYTES:
        try:
            queued = queue.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            break
        if queued[1] is not None:
            return batch, queued
        batch.append(queued)
        size += len(queued[0])
    return batch, None


# What an engine may send besides the wire's own messages (Progress stands for FrameEnded, PreviewRef for PreviewUpdated).
# A compositor preview's JPEG (a few KB at panel sizes) comes over the socket with its event.
_ENGINE_EVENTS = (api.ViewData, api.NodeStats, api.NodeState, api.CompositorPreviewUpdated, api.Started, api.Failed)
