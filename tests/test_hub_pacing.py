"""Frame pacing in the hub: a session's coalescable events reach a connection together at the end of each of its frames, the latest of each key."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import trio
import trio.testing

from compositord.daemon.control.hub import Hub
from compositord.daemon.control.mailbox import Mailbox
from compositord.daemon.control.outgoing import Broadcast, Outgoing, text_of

PERIOD = 1 / 60


class FakeConnection:
    def __init__(self) -> None:
        self.mailbox = Mailbox(64)
        self.closed_for: str | None = None

    def close_for_policy(self, reason: str) -> None:
        self.closed_for = reason

    def deliver(self, messages: Sequence[tuple[Hashable | None, Outgoing]]) -> None:
        self.mailbox.put_all(messages)

    def drain(self) -> list[str]:
        out = []
        while len(self.mailbox):
            out.append(text_of(self.mailbox.get_nowait()))
        return out


def _period_of(periods: dict[str, float]):
    return lambda session: periods.get(session)


async def _paced_hub(nursery: trio.Nursery, periods: dict[str, float]) -> tuple[Hub, FakeConnection, FakeConnection]:
    hub = Hub()
    a, b = FakeConnection(), FakeConnection()
    hub.subscribe(a)
    hub.subscribe(b)
    nursery.start_soon(hub.run, _period_of(periods))
    await trio.testing.wait_all_tasks_blocked()
    return hub, a, b


async def test_many_tunes_in_one_frame_reach_each_connection_once_latest_wins(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        hub, a, b = await _paced_hub(nursery, {"s": PERIOD})
        key = ("s", "comp", "params")
        hub.publish("p0", key)  # the first after a quiet period leaves at once
        assert a.drain() == ["p0"] and b.drain() == ["p0"]
        for i in range(1, 50):  # 49 tunes land within one frame
            hub.publish(f"p{i}", key)
        assert a.drain() == [] and b.drain() == []
        assert hub.held() == 1
        await trio.sleep(PERIOD / 2)
        assert a.drain() == []
        hub.frame_ended("s")
        assert a.drain() == ["p49"] and b.drain() == ["p49"]
        assert hub.held_replaced == 48
        nursery.cancel_scope.cancel()


class RecordingMailbox(Mailbox):
    """Records when the hub hands each event over (what reaches the connection's socket queue)."""

    def __init__(self) -> None:
        super().__init__(64)
        self.handed: list[tuple[float, str]] = []

    def put_coalescing(self, key: object, message: Outgoing) -> None:
        self.handed.append((trio.current_time(), text_of(message)))
        super().put_coalescing(key, message)


async def _render_loop(hub: Hub, session: str, frames: int) -> None:
    """What the render loop does each frame: its view data, then the frame's end."""
    for n in range(frames):
        await trio.sleep(PERIOD)
        hub.publish(f"v{n}", (session, "comp", "view"))
        hub.frame_ended(session)


async def test_a_frames_params_and_view_data_leave_together_once_per_frame(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"s": PERIOD})
        a.mailbox = recording = RecordingMailbox()
        nursery.start_soon(_render_loop, hub, "s", 61)
        for i in range(600):  # one second of 600 tunes/s of one node
            hub.publish(f"p{i}", ("s", "comp", "params"))
            await trio.sleep(1 / 600)
        await trio.sleep(2 * PERIOD)
        params = [(t, text) for t, text in recording.handed if text.startswith("p")]
        view_times = {t for t, text in recording.handed if text.startswith("v")}
        assert 55 <= len(params) <= 62  # about one per frame, not 600
        # Every params event after the first (quiet) one left at a frame's end, with that frame's view data.
        assert all(t in view_times for t, _ in params[1:])
        numbers = [int(text[1:]) for _, text in params]
        assert numbers == sorted(numbers)  # never a stale one after a newer one
        assert numbers[-1] == 599  # the latest goes out with the next frame
        nursery.cancel_scope.cancel()


async def test_a_late_frame_end_does_not_send_the_next_tune_on_its_own(autojump_clock: trio.testing.MockClock) -> None:
    """A frame end that reaches the hub a little over a period after the last (jitter, a busy control
    process) does not make the session quiet: a tune then waits for the frame's end as usual, instead of
    costing every connection one more write just before the frame's."""
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"s": PERIOD})
        hub.publish("p0", ("s", "n", "params"))
        assert a.drain() == ["p0"]  # quiet before: at once
        await trio.sleep(1.5 * PERIOD)  # the next frame end is late
        hub.publish("p1", ("s", "n", "params"))
        assert a.drain() == []
        hub.publish("v1", ("s", "n", "view"))
        hub.frame_ended("s")
        assert a.drain() == ["p1", "v1"]  # together, in one delivery
        await trio.sleep(2.01 * PERIOD)  # now quiet for two periods
        hub.publish("p2", ("s", "n", "params"))
        assert a.drain() == ["p2"]
        nursery.cancel_scope.cancel()


async def test_held_events_leave_after_two_periods_when_no_frame_ends(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"s": PERIOD})
        hub.publish("p0", ("s", "n", "params"))
        assert a.drain() == ["p0"]
        hub.publish("p1", ("s", "n", "params"))  # held; the render loop is stalled
        await trio.sleep(1.9 * PERIOD)
        assert a.drain() == []
        await trio.sleep(0.2 * PERIOD)
        assert a.drain() == ["p1"]
        nursery.cancel_scope.cancel()


async def test_an_unkeyed_event_first_flushes_what_is_held(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"s": PERIOD})
        hub.publish("p0", ("s", "n", "params"))
        assert a.drain() == ["p0"]
        hub.publish("p1", ("s", "n", "params"))  # held
        hub.publish("removed n")  # noderemoved: must not overtake p1
        hub.publish("added m")
        assert a.drain() == ["p1", "removed n", "added m"]
        nursery.cancel_scope.cancel()


async def test_responses_are_not_held(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"s": PERIOD})
        hub.publish("p0", ("s", "n", "params"))
        hub.publish("p1", ("s", "n", "params"))  # held for the frame
        a.mailbox.put("success")  # what Connection.send does with a response
        assert a.drain() == ["p0", "success"]
        hub.frame_ended("s")
        assert a.drain() == ["p1"]
        nursery.cancel_scope.cancel()


async def test_sessions_are_flushed_by_their_own_frames(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"fast": 1 / 60, "slow": 1 / 10})
        for session in ("fast", "slow"):
            hub.publish(f"{session}0", (session, "n", "params"))
            hub.publish(f"{session}1", (session, "n", "params"))
        assert a.drain() == ["fast0", "slow0"]
        hub.frame_ended("fast")
        assert a.drain() == ["fast1"]
        await trio.sleep(1 / 60 + 0.001)  # still inside the slow session's quiet period
        hub.publish("slow2", ("slow", "n", "params"))
        assert a.drain() == []
        hub.frame_ended("slow")
        assert a.drain() == ["slow2"]
        hub.frame_ended("slow")  # nothing held: nothing sent
        assert a.drain() == []
        hub.publish("other", ("unpaced", "n", "params"))  # a period of None: fanned out at once
        assert a.drain() == ["other"]
        nursery.cancel_scope.cancel()


async def test_an_isolated_edit_is_not_delayed(autojump_clock: trio.testing.MockClock) -> None:
    """After a quiet frame period the params change leaves at once, and its frame's view data at that frame's end."""
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"s": PERIOD})
        hub.publish("p0", ("s", "comp", "params"))
        assert a.drain() == ["p0"]
        await trio.sleep(0.005)
        hub.publish("v0", ("s", "comp", "view"))
        hub.frame_ended("s")
        assert a.drain() == ["v0"]
        await trio.sleep(2 * PERIOD)
        hub.publish("p1", ("s", "comp", "params"))
        assert a.drain() == ["p1"]
        nursery.cancel_scope.cancel()


async def test_cancelling_run_flushes_and_turns_pacing_off(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"s": PERIOD})
        hub.publish("p0", ("s", "n", "params"))
        assert a.drain() == ["p0"]
        hub.publish("p1", ("s", "n", "params"))
        assert a.drain() == []
        nursery.cancel_scope.cancel()
    assert a.drain() == ["p1"]
    hub.publish("p2", ("s", "n", "params"))
    assert a.drain() == ["p2"]


def test_without_run_every_event_is_fanned_out_at_once() -> None:
    hub = Hub()
    a = FakeConnection()
    hub.subscribe(a)
    hub.publish("p0", ("s", "n", "params"))
    hub.publish("p1", ("s", "n", "params"))
    assert a.drain() == ["p1"]  # only the mailbox's own coalescing of an unsent event


async def test_a_drag_at_the_frame_rate_leaves_with_each_frames_view_data(autojump_clock: trio.testing.MockClock) -> None:
    """One editor at 60 Hz while the frames emit view data: each params change leaves at the end of the frame
    it arrived in, together with that frame's view data (never later, never two per frame)."""
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"s": PERIOD})
        a.mailbox = recording = RecordingMailbox()
        nursery.start_soon(_render_loop, hub, "s", 30)
        await trio.sleep(PERIOD * 2 + PERIOD / 3)  # out of phase with the frames, which are running
        for i in range(20):
            published = trio.current_time()
            hub.publish(f"p{i}", ("s", "comp", "params"))
            await trio.sleep(PERIOD)
            handed = [t for t, text in recording.handed if text == f"p{i}"]
            assert len(handed) == 1 and 0 < handed[0] - published <= PERIOD
            assert any(t == handed[0] and text.startswith("v") for t, text in recording.handed)
        nursery.cancel_scope.cancel()


async def test_an_event_replaced_in_the_hub_is_never_encoded(autojump_clock: trio.testing.MockClock) -> None:
    encoded: list[int] = []

    def event(n: int) -> Broadcast:
        def encode() -> str:
            encoded.append(n)
            return f"p{n}"

        return Broadcast.deferred(encode)

    async with trio.open_nursery() as nursery:
        hub, a, b = await _paced_hub(nursery, {"s": PERIOD})
        hub.publish(event(0), ("s", "comp", "params"))  # leaves at once
        assert a.drain() == ["p0"] and b.drain() == ["p0"]
        for n in range(1, 10):  # within the frame: only the last is sent
            hub.publish(event(n), ("s", "comp", "params"))
        hub.frame_ended("s")
        assert a.drain() == ["p9"] and b.drain() == ["p9"]
        assert encoded == [0, 9]  # once each, for both connections
        nursery.cancel_scope.cancel()


class OrderedConnection(FakeConnection):
    """Notes, in one list shared by all, which connection each fan-out reached in which order."""

    def __init__(self, name: str, reached: list[str]) -> None:
        super().__init__()
        self.name = name
        self.reached = reached

    def deliver(self, messages: Sequence[tuple[Hashable | None, Outgoing]]) -> None:
        self.reached.append(self.name)
        super().deliver(messages)


async def test_connections_that_edit_are_served_first_and_only_while_they_edit(autojump_clock: trio.testing.MockClock) -> None:
    from compositord.daemon.control.hub import EDITING_WINDOW_S

    reached: list[str] = []
    hub = Hub()
    connections = [OrderedConnection(f"c{i}", reached) for i in range(20)]
    for connection in connections:
        hub.subscribe(connection)
    editors = [connections[17], connections[3]]
    for editor in editors:
        hub.edited_by(editor)
    hub.publish("after the edits")
    assert reached[:2] == ["c17", "c3"]  # in the order they last edited
    assert sorted(reached) == sorted(c.name for c in connections)  # everyone, once
    assert all(c.drain() == ["after the edits"] for c in connections)

    hub.unsubscribe(connections[3])  # gone: never served again, editing or not
    hub.edited_by(connections[3])
    reached.clear()
    hub.publish("after one left")
    assert reached[0] == "c17" and "c3" not in reached and len(reached) == 19

    await trio.sleep(EDITING_WINDOW_S + 0.01)  # c17 stopped editing: a watcher like the rest
    hub.edited_by(connections[5])
    reached.clear()
    hub.publish("later")
    assert reached[0] == "c5" and reached.count("c17") == 1
    assert hub.subscribers()[0] is connections[5] and len(hub.subscribers()) == 19
