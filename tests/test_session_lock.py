"""sessions/live.holding: a session's lock taken without a schedule point when it is free.

A tune's critical section (validate, budget, store, engine, publish) waits for nothing else, so while
no other task holds the lock, taking it must not let the scheduler run other tasks in between: with
``async with lock`` it did, and under load each tune then held its session's lock across a whole round
of the scheduler, so 600 tunes a second queued for it (perf/README.md, control_latency)."""

from __future__ import annotations

import trio
import trio.testing

from compositord.daemon.sessions.live import holding


async def test_a_free_lock_is_taken_without_a_schedule_point() -> None:
    lock = trio.Lock()
    with trio.testing.assert_no_checkpoints():
        async with holding(lock):
            assert lock.locked()
    assert not lock.locked()
    with trio.testing.assert_checkpoints():  # what trio's own acquire does, which made tunes queue
        async with lock:
            pass


async def test_a_free_lock_is_taken_without_letting_another_task_run() -> None:
    lock = trio.Lock()
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)  # runnable: any schedule point would run it
        async with holding(lock):
            assert ran == [] and lock.locked()
        assert not lock.locked()
    assert ran == ["other"]


async def test_a_held_lock_is_waited_for_in_turn_and_given_back_on_error() -> None:
    lock = trio.Lock()
    order: list[int] = []

    async def take(n: int) -> None:
        async with holding(lock):
            order.append(n)
            await trio.sleep(0.01)

    async with trio.open_nursery() as nursery:
        for n in range(3):
            nursery.start_soon(take, n)
            await trio.testing.wait_all_tasks_blocked()
    assert order == [0, 1, 2]

    try:
        async with holding(lock):
            raise ValueError("refused")
    except ValueError:
        pass
    assert not lock.locked()
