"""FramePacer on a synthetic clock: a live source's clock drifting against the output's."""

from __future__ import annotations

import heapq
import random

import pytest

from compositord.daemon.engine.sources.pacing import FramePacer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(
    *,
    source_fps: float,
    source_clock_rate: float,
    output_fps: float,
    seconds: float,
    jitter_s: float = 0.0,
    latency_s: float = 0.05,
    seed: int = 1,
) -> tuple[FramePacer[int], list[int], float]:
    """Drive a pacer: the source stamps frame k with pts k / source_fps on its own clock, which runs
    ``source_clock_rate`` times as fast as the local one (so frame k arrives at k / source_fps / rate,
    plus up to ``jitter_s``); the output takes a frame every 1 / output_fps. Returns the pacer, the
    frame numbers shown, and the largest age of a shown frame (local seconds since its arrival)."""
    clock = FakeClock()
    pacer: FramePacer[int] = FramePacer(clock=clock, latency_s=latency_s)
    rng = random.Random(seed)
    events: list[tuple[float, int, int]] = []  # (local time, 0 = arrival / 1 = output tick, frame number)
    k = 0
    while (arrival := k / source_fps / source_clock_rate) < seconds:
        heapq.heappush(events, (arrival + rng.uniform(0, jitter_s), 0, k))
        k += 1
    n = 0
    while (tick := n / output_fps) < seconds:
        heapq.heappush(events, (tick, 1, n))
        n += 1
    arrived_at: dict[int, float] = {}
    shown: list[int] = []
    oldest = 0.0
    last_arrival = -1
    while events:
        at, kind, number = heapq.heappop(events)
        clock.now = at
        if kind == 0:
            number = max(number, last_arrival + 1)  # jitter may swap arrivals: the source still sends in order
            last_arrival = number
            arrived_at[number] = at
            pacer.push(number, number / source_fps)
        else:
            frame = pacer.take()
            if frame is not None:
                shown.append(frame)
                oldest = max(oldest, at - arrived_at[frame])
    return pacer, shown, oldest


@pytest.mark.parametrize("drift", [0.01, -0.01, 0.002])
def test_drift_is_corrected_by_dropping_or_repeating_as_many_frames_as_the_clocks_differ(drift: float) -> None:
    seconds = 120.0
    pacer, shown, oldest = run(source_fps=30, source_clock_rate=1 + drift, output_fps=30, seconds=seconds)
    expected = abs(drift) * 30 * seconds  # frames the two clocks disagree by over the run
    surplus, deficit = (
        (pacer.frames_dropped, pacer.frames_repeated) if drift > 0 else (pacer.frames_repeated, pacer.frames_dropped)
    )
    assert surplus == pytest.approx(expected, abs=3 + 0.1 * expected)
    assert deficit <= 2
    assert shown == sorted(shown) and len(set(shown)) == len(shown)  # never backwards, never twice
    assert oldest < 0.05 + 2 / 30  # delay stays bounded: the latency plus a frame or two, not growing with the run
    assert pacer.resyncs == 0


def test_same_rate_with_jitter_shows_every_frame_once() -> None:
    pacer, shown, _oldest = run(source_fps=30, source_clock_rate=1.0, output_fps=30, seconds=30, jitter_s=0.012)
    assert pacer.frames_dropped <= 2 and pacer.frames_repeated <= 2
    assert len(shown) >= 30 * 30 - 3


def test_a_slower_source_rate_is_filled_by_repeats() -> None:
    pacer, shown, _oldest = run(source_fps=25, source_clock_rate=1.0, output_fps=30, seconds=20)
    assert pacer.frames_repeated == pytest.approx(5 * 20, abs=3)
    assert pacer.frames_dropped <= 1
    assert len(shown) == pytest.approx(25 * 20, abs=3)


def test_frames_keep_their_source_spacing_not_their_arrival() -> None:
    """A burst of frames that arrive together (a network hiccup) is spread out by their pts."""
    clock = FakeClock()
    pacer: FramePacer[int] = FramePacer(clock=clock, latency_s=0.0)
    clock.now = 10.0
    for k in range(4):
        pacer.push(k, 100.0 + k * 0.1)
    got = []
    for step in range(5):
        clock.now = 10.0 + step * 0.1
        got.append(pacer.take())
    assert got == [0, 1, 2, 3, None]
    assert pacer.frames_dropped == 0 and pacer.frames_repeated == 1


def test_a_pts_jump_re_anchors_without_waiting_for_the_old_timeline() -> None:
    clock = FakeClock()
    pacer: FramePacer[str] = FramePacer(clock=clock, latency_s=0.0)
    pacer.push("a", 5.0)
    assert pacer.take() == "a"
    clock.now = 0.04
    pacer.push("b", 3600.0)  # the peer restarted its clock
    assert pacer.take() == "b"
    assert pacer.resyncs == 1


def test_a_full_queue_drops_the_oldest_and_counts_it() -> None:
    clock = FakeClock()
    pacer: FramePacer[int] = FramePacer(clock=clock, capacity=3, latency_s=0.0)
    for k in range(5):
        pacer.push(k, k * 0.01)
    assert pacer.queued() == 3
    assert pacer.frames_dropped == 2
    clock.now = 1.0
    assert pacer.take() == 4
    assert pacer.frames_dropped == 4  # 2 and 3 were due but overtaken


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        FramePacer(capacity=0)
