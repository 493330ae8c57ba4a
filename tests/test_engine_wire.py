"""engine/wire.py and engine/frame_slots.py: what crosses between the control process and an engine.

Every api message survives the framing; a frame split anywhere is put back together; the restricted
unpickler refuses what is not a message (an engine that a crafted file took over must not run code in
the control process); shared-memory slots carry a frame across a descriptor and detect an overwritten one.
"""

from __future__ import annotations

import os
import pickle
import socket
import struct
from typing import Any

import pytest

from compositord.daemon.engine import api, wire
from compositord.daemon.engine.frame_slots import FrameSlot
from compositord.tests.test_engine_api import SAMPLES, SESSION, sample_id

WIRE_SAMPLES: list[Any] = [
    *(sample for sample in SAMPLES if not isinstance(sample, (api.PushedFrame, api.EngineHealth))),
    wire.EngineConfig(
        SESSION, "/assets", None, 1, ("127.0.0.1",), output_listener="compositord.perf.latency_probe:make", listener_argument="3"
    ),
    wire.PushedFrameRef("cam", 640, 360, "i420", 33_333, 2, 1, 6, 345_600),
    wire.Progress(api.EngineStatistics(10, 1, 1, 30)),
    wire.PreviewRef("thumbs", 1, 0, 2, 1234, 160, 90, 41, 1.5, 1_700_000_000.0),
    wire.SlotOpened(3, 4096),
    wire.SlotClosed(3),
    wire.CommandComing(),
    wire.CommandSettled(),
]


@pytest.mark.parametrize("message", WIRE_SAMPLES, ids=sample_id)
def test_a_message_survives_the_framing(message: Any) -> None:
    reader = wire.FrameReader()
    assert reader.feed(wire.encode(message)) == [message]


def test_frames_split_anywhere_come_out_whole_and_in_order() -> None:
    stream = b"".join(wire.encode(message) for message in WIRE_SAMPLES)
    reader = wire.FrameReader()
    received: list[Any] = []
    for start in range(0, len(stream), 7):
        received += reader.feed(stream[start : start + 7])
    assert received == WIRE_SAMPLES


class _Exploit:
    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (os.system, ("true",))


@pytest.mark.parametrize(
    "payload",
    [_Exploit(), {"a": 1}, [api.FrameEnded("s1")], pickle.PickleError("x")],
    ids=["a function call", "a dict", "a list", "another class"],
)
def test_the_unpickler_builds_messages_only(payload: Any) -> None:
    body = pickle.dumps(payload)
    with pytest.raises(wire.WireError):
        wire.FrameReader().feed(struct.pack(">I", len(body)) + body)


def test_a_frame_longer_than_the_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(wire.WireError, match="announces"):
        wire.FrameReader().feed(struct.pack(">I", wire.MAX_MESSAGE_BYTES + 1))


def test_a_slot_carries_frames_across_a_descriptor() -> None:
    writer = FrameSlot.create(1000)
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        socket.send_fds(left, [wire.encode(wire.SlotOpened(1, writer.size))], [writer.fileno()])
        data, fds, _flags, _address = socket.recv_fds(right, 4096, 4)
        reader_side = wire.FrameReader()
        (opened,) = reader_side.feed(data, fds)
        assert isinstance(opened, wire.SlotOpened)
        reader = FrameSlot.attach(reader_side.take_fd(), opened.size)
        first = writer.write(b"a" * 1000)
        second = writer.write(b"b" * 10)
        assert first[0] != second[0]  # two buffers in turn: the last announced is never overwritten next
        assert reader.read(*first, 1000) == b"a" * 1000
        assert reader.read(*second, 10) == b"b" * 10
        writer.write(b"c" * 5)  # comes round to the first buffer again
        assert reader.read(*first, 1000) is None  # overwritten: dropped, never torn
        with pytest.raises(ValueError, match="do not fit"):
            writer.write(b"x" * (writer.capacity + 1))
        reader.close()
    finally:
        writer.close()
        left.close()
        right.close()


def test_a_slot_refuses_a_descriptor_smaller_than_announced() -> None:
    writer = FrameSlot.create(100)
    try:
        with pytest.raises(ValueError, match="came with a descriptor"):
            FrameSlot.attach(os.dup(writer.fileno()), writer.size * 4)
    finally:
        writer.close()


async def test_queued_commands_leave_in_one_write_and_a_descriptor_starts_its_own() -> None:
    """The control process's writer (control/engine_client.write_batch): everything queued goes to the
    engine's socket in one write, except that a message carrying a descriptor begins the next write."""
    import trio

    from compositord.daemon.control.engine_client import WRITE_BATCH_BYTES, write_batch

    slot = FrameSlot.create(64, "compositord-test-batch")
    try:
        send, receive = trio.open_memory_channel[tuple[bytes, Any, Any, int]](16)
        for name in ("a", "b", "c"):
            send.send_nowait((name.encode(), None, None, 0))
        send.send_nowait((b"slot", slot, None, 0))
        send.send_nowait((b"d", None, None, 0))
        first = receive.receive_nowait()
        batch, held = write_batch(first, receive)
        assert [queued[0] for queued in batch] == [b"a", b"b", b"c"]
        assert held is not None and held[0] == b"slot" and held[1] is slot
        batch, held = write_batch(held, receive)
        assert [queued[0] for queued in batch] == [b"slot", b"d"] and held is None

        big = b"x" * (WRITE_BATCH_BYTES // 2 + 1)
        for _ in range(3):
            send.send_nowait((big, None, None, 0))
        batch, held = write_batch(receive.receive_nowait(), receive)
        assert len(batch) == 2 and held is None  # about WRITE_BATCH_BYTES a write; the rest waits for the next
        assert receive.statistics().current_buffer_used == 1
    finally:
        slot.close()


def test_a_pushed_frame_overwritten_before_the_engine_reads_it_counts_as_received_and_dropped() -> None:
    """Three pushes in a row into a two-buffer slot: the first is gone before the engine copies it out. The node
    must still count it (received, and dropped as an overtaken frame is), or a client sees frames vanish."""
    import array

    from compositord.daemon.engine.process import EngineMain
    from compositord.daemon.engine.sources.pacing import FramePacer

    class RecordingLoop:
        frame_interval = 1.0  # a slow loop: the main thread reads everything itself

        def __init__(self) -> None:
            self.pacer: FramePacer[bytes] = FramePacer()

        def push_frame(self, frame: Any) -> None:
            self.pacer.push(bytes(frame.data), frame.pts_us / 1e6)

        def push_frame_lost(self, node_id: str) -> None:
            assert node_id == "cam"
            self.pacer.lost()

    control, engine = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    slot = FrameSlot.create(16, "compositord-test-lost")
    try:
        control.sendmsg(
            [wire.encode(wire.SlotOpened(7, slot.size))],
            [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [slot.fileno()]))],
        )
        announced = [slot.write(bytes([index]) * 16) for index in range(3)]  # the third overwrites the first
        for index, (buffer, seq) in enumerate(announced):
            control.sendall(wire.encode(wire.PushedFrameRef("cam", 2, 2, "rgba8", index * 33_333, 7, buffer, seq, 16)))
        control.sendall(wire.encode(api.Stop()))
        main, loop = EngineMain(engine), RecordingLoop()
        main.serve(loop)  # type: ignore[arg-type]  # the loop's push surface is all serve() uses
        stats = loop.pacer.stats()
        assert stats["frames_received"] == 3 and stats["frames_dropped"] >= 1
        assert main.frames_unreadable == 1
    finally:
        slot.close()
        control.close()
        engine.close()


def test_a_deliverys_events_leave_in_one_write_at_its_end() -> None:
    from compositord.daemon.engine.process import SocketDelivery, SocketEvents

    engine_end, control_end = socket.socketpair()
    control_end.setblocking(False)
    try:
        events = SocketEvents(engine_end, lambda: api.EngineStatistics(10, 0, 0, 60))
        delivery = SocketDelivery(after_round=events.flush)

        def deliver_a_frame() -> None:
            events.on_event(api.ViewData("s1", "comp", {"layers": []}, None, {"a": 1}, 1, 0.0))
            events.on_event(api.FrameEnded("s1"))
            with pytest.raises(BlockingIOError):
                control_end.recv(1 << 16)  # nothing written while the round runs

        delivery.run_sync_soon(deliver_a_frame)  # the writer is idle: the round runs here, at once
        data = control_end.recv(1 << 16)  # written before run_sync_soon returned, with no writer thread running
        messages = wire.FrameReader().feed(data)
        assert [type(message) for message in messages] == [api.ViewData, wire.Progress]  # both, in order, one read
        progress = messages[1]
        assert isinstance(progress, wire.Progress) and progress.statistics.frames_rendered == 10
        delivery.close()
        delivery.run()  # the writer thread's loop: nothing left, so it returns
    finally:
        engine_end.close()
        control_end.close()


def test_a_round_the_socket_cannot_take_is_finished_by_the_writer_and_later_rounds_wait_behind_it() -> None:
    """The render thread's round never waits for a busy control process: what the socket does not take is
    written by the writer thread, before any later round, and a preview slot's descriptor still arrives with
    its message although the slot was replaced meanwhile."""
    import threading

    from compositord.daemon.engine.process import SocketDelivery, SocketEvents

    engine_end, control_end = socket.socketpair()
    try:
        filler = 0
        engine_end.setblocking(False)
        try:
            while True:
                filler += engine_end.send(b"\0" * 65536)
        except BlockingIOError:
            pass
        engine_end.setblocking(True)  # as in an engine: the writer's writes wait
        events = SocketEvents(engine_end, lambda: api.EngineStatistics(1, 0, 0, 60))
        delivery = SocketDelivery(after_round=events.flush)
        image = api.PreviewImage(b"\xff\xd8jpeg", 2, 2, 1, 0.0, 0.0)
        small_then_big = [image, api.PreviewImage(b"\xff" * (300 * 1024), 2, 2, 2, 0.0, 0.0)]

        def frame(number: int) -> Any:
            def deliver() -> None:
                events.on_event(api.ViewData("s1", "comp", {"frame": number}, None, {}, number, 0.0))
                if number <= 2:
                    events.on_event(api.PreviewUpdated("s1", "thumb", small_then_big[number - 1]))
                events.on_event(api.FrameEnded("s1"))

            return deliver

        delivery.run_sync_soon(frame(1))  # returns although the socket is full
        delivery.run_sync_soon(frame(2))  # waits behind frame 1's unwritten bytes; its preview replaces the slot
        writer = threading.Thread(target=delivery.run, daemon=True)
        writer.start()
        received = bytearray()
        reader = wire.FrameReader()
        messages: list[Any] = []
        control_end.settimeout(5.0)
        while len(received) < filler:
            received += control_end.recv(filler - len(received))
        while sum(isinstance(message, wire.Progress) for message in messages) < 2:
            data, ancillary, _flags, _address = control_end.recvmsg(1 << 20, socket.CMSG_SPACE(4 * wire.MAX_FDS_PER_READ))
            messages += reader.feed(data, wire.received_fds(ancillary))
        kinds = [type(message).__name__ for message in messages]
        assert kinds == [
            "ViewData",
            "SlotOpened",
            "PreviewRef",
            "Progress",
            "ViewData",
            "SlotClosed",
            "SlotOpened",
            "PreviewRef",
            "Progress",
        ]
        assert [message.seq for message in messages if isinstance(message, api.ViewData)] == [1, 2]
        for _ in range(2):  # each SlotOpened came with a descriptor that still maps its slot
            slot = FrameSlot.attach(reader.take_fd(), 256 * 1024)
            slot.close()
        delivery.close()
        writer.join(5.0)
        assert not writer.is_alive()
    finally:
        engine_end.close()
        control_end.close()


class _CommandLoop:
    """What ``EngineMain`` hands commands to: records them, at the frame rate the test sets."""

    def __init__(self, frame_interval: float) -> None:
        self.frame_interval = frame_interval
        self.submitted: list[api.Command] = []

    def submit(self, command: api.Command) -> None:
        self.submitted.append(command)


def _tune(rev: int) -> api.ParamsUpdate:
    from compositord.protocol.causal import Stamp

    return api.ParamsUpdate("comp", {"x": rev}, Stamp("editor", rev))


def test_at_60_fps_commands_wait_in_the_socket_for_the_render_threads_read_at_a_frames_start() -> None:
    """The main thread is not woken by commands while frames come often: what waits in the socket is taken by
    ``read_waiting`` (the render thread, just before it latches), in order; a Stop read there ends ``serve``."""
    import threading
    import time

    from compositord.daemon.engine.process import EngineMain

    control, engine = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    main, loop = EngineMain(engine), _CommandLoop(frame_interval=1 / 60)
    served = threading.Thread(target=main.serve, args=(loop,), daemon=True)
    try:
        served.start()
        control.sendall(wire.encode(_tune(1)) + wire.encode(_tune(2)))
        time.sleep(0.3)
        assert loop.submitted == []  # left in the socket for the frame's start
        main.read_waiting(loop)  # type: ignore[arg-type]  # submit and frame_interval are all it uses
        assert [command.stamp.rev for command in loop.submitted if isinstance(command, api.ParamsUpdate) and command.stamp] == [
            1,
            2,
        ]
        main.read_waiting(loop)  # type: ignore[arg-type]
        assert len(loop.submitted) == 2  # nothing more waited
        control.sendall(wire.encode(_tune(3)) + wire.encode(api.Stop()) + wire.encode(_tune(4)))
        main.read_waiting(loop)  # type: ignore[arg-type]
        served.join(5.0)
        assert not served.is_alive()  # the Stop, read by the render thread, ended the main thread's serve
        assert len(loop.submitted) == 3  # nothing after the Stop
    finally:
        control.close()
        engine.close()


def test_a_slow_loop_does_not_keep_a_command_waiting_for_its_next_frame() -> None:
    """At 1 fps (no compositor) a command would wait up to a second in the socket: the main thread reads it at once."""
    import threading
    import time

    from compositord.daemon.engine.process import EngineMain

    control, engine = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    main, loop = EngineMain(engine), _CommandLoop(frame_interval=1.0)
    served = threading.Thread(target=main.serve, args=(loop,), daemon=True)
    try:
        served.start()
        control.sendall(wire.encode(_tune(1)))
        deadline = time.monotonic() + 2.0
        while not loop.submitted and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(loop.submitted) == 1
        control.close()  # the control process is gone: serve ends
        served.join(5.0)
        assert not served.is_alive()
    finally:
        control.close()
        engine.close()


def test_a_frames_start_waits_for_an_announced_command_and_no_longer_than_its_bound() -> None:
    """``CommandComing`` makes the frame's read wait for the tune's command (here sent 20 ms later, with a 60 ms
    bound patched in), which settles it; a ``CommandSettled`` (a refusal) does too. An announcement whose
    command does not come in time costs that frame the bound and is then forgotten."""
    import threading
    import time

    from compositord.daemon.engine import process
    from compositord.daemon.engine.process import EngineMain

    control, engine = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    main, loop = EngineMain(engine), _CommandLoop(frame_interval=1.0)
    bound = pytest.MonkeyPatch()
    bound.setattr(process, "COMING_WAIT_MAX_S", 0.06)
    try:
        control.sendall(wire.encode(wire.CommandComing()))
        later = threading.Timer(0.02, lambda: control.sendall(wire.encode(_tune(1))))
        later.start()
        started = time.monotonic()
        main.read_waiting(loop)  # type: ignore[arg-type]
        waited = time.monotonic() - started
        later.join()
        assert [command.stamp.rev for command in loop.submitted if isinstance(command, api.ParamsUpdate) and command.stamp] == [1]
        assert 0.015 < waited < 0.055  # until the command came, not until the bound

        started = time.monotonic()
        main.read_waiting(loop)  # type: ignore[arg-type]  # settled: nothing announced any more
        assert time.monotonic() - started < 0.015

        control.sendall(wire.encode(wire.CommandComing()) + wire.encode(wire.CommandSettled()))  # announced, refused
        started = time.monotonic()
        main.read_waiting(loop)  # type: ignore[arg-type]
        assert time.monotonic() - started < 0.015

        control.sendall(wire.encode(wire.CommandComing()))  # its command late: the bound ends the wait
        started = time.monotonic()
        main.read_waiting(loop)  # type: ignore[arg-type]
        waited = time.monotonic() - started
        assert 0.055 < waited < 0.5 and len(loop.submitted) == 1
        started = time.monotonic()
        main.read_waiting(loop)  # type: ignore[arg-type]  # the next frame does not wait for it again
        assert time.monotonic() - started < 0.015
    finally:
        bound.undo()
        control.close()
        engine.close()
