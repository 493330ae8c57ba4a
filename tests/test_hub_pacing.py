"""Frame pacing in the hub: coalescable events reach a connection at most once per frame period, the latest."""

from __future__ import annotations

import trio
import trio.testing

from compositord.daemon.hub import Hub
from compositord.daemon.outgoing import Outgoing, text_of
from compositord.daemon.mailbox import Mailbox

PERIOD = 1 / 60


class FakeConnection:
    def __init__(self) -> None:
        self.mailbox = Mailbox(64)
        self.closed_for: str | None = None

    def close_for_policy(self, reason: str) -> None:
        self.closed_for = reason

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
        for i in range(1, 50):  # 49 tunes land within one frame period
            hub.publish(f"p{i}", key)
        assert a.drain() == [] and b.drain() == []
        assert hub.held() == 1
        await trio.sleep(PERIOD / 2)
        assert a.drain() == []
        await trio.sleep(PERIOD / 2 + 0.001)
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


async def test_at_most_one_event_per_key_per_period_under_a_steady_stream(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"s": PERIOD})
        a.mailbox = recording = RecordingMailbox()
        for i in range(600):  # one second of 600 tunes/s of one node, and view data every 10th
            hub.publish(f"p{i}", ("s", "comp", "params"))
            if i % 10 == 0:
                hub.publish(f"v{i}", ("s", "comp", "view"))
            await trio.sleep(1 / 600)
        params_times = [t for t, text in recording.handed if text.startswith("p")]
        view_times = [t for t, text in recording.handed if text.startswith("v")]
        assert 50 <= len(params_times) <= 61  # about one per frame, not 600
        assert all(t2 - t1 >= PERIOD - 1e-9 for t1, t2 in zip(params_times, params_times[1:]))
        assert all(t2 - t1 >= PERIOD - 1e-9 for t1, t2 in zip(view_times, view_times[1:]))
        numbers = [int(text[1:]) for _, text in recording.handed if text.startswith("p")]
        assert numbers == sorted(numbers)  # never a stale one after a newer one
        assert numbers[-1] >= 590  # the latest goes out within a frame
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
        await trio.sleep(PERIOD + 0.001)
        assert a.drain() == ["p1"]
        nursery.cancel_scope.cancel()


async def test_sessions_are_paced_by_their_own_frame_period(autojump_clock: trio.testing.MockClock) -> None:
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"fast": 1 / 60, "slow": 1 / 10})
        for session in ("fast", "slow"):
            hub.publish(f"{session}0", (session, "n", "params"))
            hub.publish(f"{session}1", (session, "n", "params"))
        assert a.drain() == ["fast0", "slow0"]
        await trio.sleep(1 / 60 + 0.001)
        assert a.drain() == ["fast1"]
        await trio.sleep(1 / 10)
        assert a.drain() == ["slow1"]
        hub.publish("other", ("unpaced", "n", "params"))  # a period of None: fanned out at once
        assert a.drain() == ["other"]
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


async def test_channels_are_paced_apart(autojump_clock: trio.testing.MockClock) -> None:
    """A nodeparamschanged that just left must not hold back the view data of the frame that applies it."""
    async with trio.open_nursery() as nursery:
        hub, a, _ = await _paced_hub(nursery, {"s": PERIOD})
        hub.publish("p0", ("s", "comp", "params"))
        await trio.sleep(0.005)
        hub.publish("v0", ("s", "comp", "view"))
        hub.publish("p1", ("s", "other", "params"))
        assert a.drain() == ["p0", "v0", "p1"]
        nursery.cancel_scope.cancel()
