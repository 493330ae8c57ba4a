"""End to end through the daemon (its engine process, the hub, a client): a tune of an input's gain or mute
changes the compositor's meters in ``nodestatsupdated``, which arrive about 10 times a second."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from compositord.client import Client, CompositordError, open_client
from compositord.testing.plugin import RunningDaemon

pytestmark = pytest.mark.gl

PIPELINE: dict[str, Any] = {
    "nodes": {
        "bars": {"kind": "video::colorbars", "params": {"width": 64, "height": 36}},
        "tone": {"kind": "audio::tone", "params": {"frequency_hz": 440.0, "level_dbfs": -10.0}},
        "comp": {"kind": "video::compositor", "params": {"width": 64, "height": 36, "fps": 30}},
    },
    "connections": [
        {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
        {"from_node": "tone", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
    ],
}


@pytest.fixture
def compositord_pipeline() -> dict[str, Any]:
    return copy.deepcopy(PIPELINE)


@pytest.fixture
async def client(compositord_daemon: RunningDaemon) -> AsyncIterator[Client]:
    async with open_client(compositord_daemon.url) as connected:
        await connected.get_pipeline(compositord_daemon.session_id)
        yield connected


class Meters:
    def __init__(self) -> None:
        self.seen: list[tuple[float, dict[str, Any]]] = []  # (arrival time, the stats' audio)

    async def watch(self, client: Client, session_id: str) -> None:
        async for event in client.events():
            if event.name == "nodestatsupdated" and event.session_id == session_id and event.node_id == "comp":
                audio = event.payload["stats"].get("audio")
                if audio is not None:
                    self.seen.append((trio.current_time(), audio))

    async def until(self, predicate: Any, timeout: float = 10.0) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while not (self.seen and predicate(self.seen[-1][1])):
                await trio.sleep(0.02)
        return self.seen[-1][1]


def in_1_peak(audio: dict[str, Any]) -> float:
    return float(audio["inputs"]["in_1"]["peak_dbfs"][0])


async def test_a_tune_of_gain_and_mute_moves_the_meters(compositord_daemon: RunningDaemon, client: Client) -> None:
    session = compositord_daemon.session_id
    meters = Meters()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(meters.watch, client, session)
        first = await meters.until(lambda audio: "in_1" in audio["inputs"])
        assert in_1_peak(first) == pytest.approx(-10.0, abs=0.1)
        assert first["mix"]["rms_dbfs"][0] == pytest.approx(-13.01, abs=0.1)
        assert (first["sample_rate"], first["channels"]) == (48000, "stereo")

        count, started = len(meters.seen), trio.current_time()
        await trio.sleep(1.0)
        rate = (len(meters.seen) - count) / (trio.current_time() - started)
        assert 6 <= rate <= 11, rate

        await client.tune(session, "comp", {"layers": {"in_1": {"audio": {"gain_db": 6.0}}}})
        await meters.until(lambda audio: in_1_peak(audio) == pytest.approx(-4.0, abs=0.1))
        await client.tune(session, "comp", {"layers": {"in_1": {"audio": {"mute": True}}}})
        muted = await meters.until(lambda audio: audio["mix"]["peak_dbfs"] == [-120.0, -120.0])
        assert in_1_peak(muted) == -120.0
        await client.tune(session, "comp", {"layers": {"in_1": {"audio": {"mute": False}}}})
        await meters.until(lambda audio: in_1_peak(audio) == pytest.approx(-4.0, abs=0.1))
        nursery.cancel_scope.cancel()


async def test_a_bad_audio_param_is_refused_with_its_field(compositord_daemon: RunningDaemon, client: Client) -> None:
    with pytest.raises(CompositordError) as caught:
        await client.tune(compositord_daemon.session_id, "comp", {"audio": {"sample_rate": 22050}})
    assert "/audio/sample_rate" in str(caught.value)
