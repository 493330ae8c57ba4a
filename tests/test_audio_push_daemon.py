"""audio::push through the real daemon (PROTOCOL.md section 6.1), in both engine modes.

A client pushes a sine as PCM with the client library; the node's stats show
it arrived and was converted to the bus rate (48 kHz) at its level, and in
thread mode, where the test can reach the render loop, the node's buffer holds
the sine at its frequency. Malformed messages, unknown nodes, nodes of another
kind or format, and audio over the connection's budget are ``error`` events
naming the header field, and the daemon serves on.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from trio_websocket import open_websocket_url

from compositord.client import open_client
from compositord.daemon.config import EngineSettings, Limits, Settings
from compositord.daemon.engine.api import Engine, EngineEvents
from compositord.daemon.state.model import SessionRecord
from compositord.protocol import pcm
from compositord.protocol.errors import LocalProtocolError
from compositord.testing.plugin import RunningDaemon, settings_for, start_daemon

PIPELINE: dict[str, Any] = {
    "nodes": {
        "mic": {"kind": "audio::push", "params": {"latency_ms": 0}},
        "desk": {"kind": "audio::push", "params": {"sample_rate": 48000, "channels": 2}},
        "cam": {"kind": "video::push", "params": {"width": 32, "height": 16}},
        "comp": {"kind": "video::compositor", "params": {"width": 64, "height": 32, "fps": 30, "num_inputs": 2}},
    },
    "connections": [
        {"from_node": "cam", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
        {"from_node": "desk", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"},
    ],
}
RATE = 44100
FREQUENCY = 1000.0


@asynccontextmanager
async def running(
    tmp_path: Path, mode: str, *, limits: Limits | None = None, engine_factory: Any = None
) -> AsyncIterator[RunningDaemon]:
    settings: Settings = settings_for(tmp_path / "state", PIPELINE)
    settings = dataclasses.replace(settings, engine=EngineSettings(mode=mode), limits=limits or Limits())
    async with trio.open_nursery() as nursery:
        daemon = await start_daemon(nursery, settings, stop_timeout=10.0, engine_factory=engine_factory)
        yield daemon
        nursery.cancel_scope.cancel()


def sine_s16(count: int, start: int = 0) -> np.ndarray:
    return np.round(0.5 * np.sin(2 * np.pi * FREQUENCY * (np.arange(count) + start) / RATE) * 32767).astype(np.int16)


async def stats_until(
    events: Any, node_id: str, predicate: Callable[[dict[str, Any]], bool], timeout: float = 20.0
) -> dict[str, Any]:
    with trio.fail_after(timeout):
        async for event in events:
            if event.name == "nodestatsupdated" and event.node_id == node_id and predicate(event.payload["stats"]):
                stats: dict[str, Any] = event.payload["stats"]
                return stats
    raise AssertionError("the event stream ended")


@pytest.mark.parametrize("mode", ["process", "thread"])
async def test_a_pushed_sine_reaches_the_node_at_the_bus_rate(tmp_path: Path, mode: str) -> None:
    loops: list[Any] = []
    factory = None
    if mode == "thread":
        from compositord.daemon.app import render_loop_factory

        def factory(record: SessionRecord, events: EngineEvents) -> Engine:
            loop = render_loop_factory(settings)(record, events)
            loops.append(loop)
            return loop

    settings = settings_for(tmp_path / "state", PIPELINE)
    async with running(tmp_path, mode, engine_factory=factory) as daemon, open_client(daemon.url) as client:
        events = client.events()
        chunk = RATE // 100  # 10 ms messages, as a live client sends them
        for start in range(0, RATE, chunk):
            await client.push_audio("mic", sine_s16(chunk, start), RATE, 1, pts_us=round(start * 1_000_000 / RATE))
        # The same second in one call: the client library splits it into 200 ms messages.
        stereo = np.repeat(np.sin(2 * np.pi * 440 * np.arange(48000) / 48000)[:, None] * 0.25, 2, axis=1).astype(np.float32)
        await client.push_audio("desk", stereo, 48000)
        stats = await stats_until(events, "mic", lambda s: s["samples_received"] == RATE)
        assert stats["messages_received"] == 100 and stats["messages_dropped"] == 0
        assert stats["input"] == {"sample_format": "s16le", "channels": 1, "sample_rate": RATE}
        assert 48000 - 100 <= stats["bus_samples"] <= 48000  # the resampler holds back its filter delay only
        assert stats["gaps"] == stats["overlaps"] == stats["discontinuities"] == 0
        # The first stats that count the whole second cover the last messages at least: -6 dBFS in, -6 out.
        assert stats["level"]["peak_dbfs"] == pytest.approx([-6.02, -6.02], abs=0.1)
        desk = await stats_until(events, "desk", lambda s: s["samples_received"] == 48000)
        assert desk["messages_received"] == 5 and desk["bus_samples"] == 48000  # 48 kHz: nothing to resample
        # The compositor renders on: the sound-only input draws no layer.
        pipeline = await client.get_pipeline(daemon.session_id)
        assert [layer["id"] for layer in pipeline["nodes"]["comp"]["view_data"]["layers"]] == []
        assert pipeline["nodes"]["comp"]["state"] == "ok"
        if mode == "thread":
            buffer = loops[0].pushed_audio("mic")
            assert buffer is not None
            sound = buffer.read(stats["bus_samples"])[:, 0]
            spectrum = np.abs(np.fft.rfft(sound * np.hanning(sound.shape[0])))
            assert np.argmax(spectrum) * 48000 / sound.shape[0] == pytest.approx(FREQUENCY, abs=2.0)
        with pytest.raises(LocalProtocolError, match="dtype int8"):
            await client.push_audio("mic", np.zeros(10, np.int8), RATE)
        with pytest.raises(LocalProtocolError, match="sample rate 44000"):
            await client.push_audio("mic", np.zeros(10, np.int16), 44000)


def _error_of(message: str | bytes) -> dict[str, Any] | None:
    received = json.loads(message)
    if received["type"] == "event" and received["payload"]["event"] == "error":
        payload: dict[str, Any] = received["payload"]
        return payload
    return None


async def test_refused_audio_names_the_field_and_the_daemon_serves_on(tmp_path: Path) -> None:
    good = pcm.pack_audio_header("mic", "s16le", 1, RATE, 441, 0) + sine_s16(441).tobytes()
    largest = pcm.pack_audio_header("mic", "f32le", 2, 96000, 19200, 0) + bytes(19200 * 8)
    cases: list[tuple[str, bytes, str, str, str]] = [
        ("version", good[:4] + b"\x09" + good[5:], "bad_envelope", "/version", "unsupported version 9"),
        ("byte count", good[:-2], "bad_envelope", "", "need 882 bytes, the message has 880"),
        ("short", good[:12], "bad_envelope", "", "shorter than the 32-byte header"),
        (
            "unknown node",
            pcm.pack_audio_header("ghost", "s16le", 1, RATE, 441, 0) + good[32:],
            "not_found",
            "/node_id_hash",
            "no node",
        ),
        (
            "other kind",
            pcm.pack_audio_header("cam", "s16le", 1, RATE, 441, 0) + good[32:],
            "invalid_params",
            "/node_id_hash",
            "video::push",
        ),
        (
            "rate",
            pcm.pack_audio_header("desk", "s16le", 2, RATE, 441, 0) + bytes(441 * 4),
            "invalid_params",
            "/sample_rate",
            "takes sample_rate 48000 Hz, got 44100 Hz",
        ),
        (
            "channels",
            pcm.pack_audio_header("desk", "s16le", 1, 48000, 480, 0) + bytes(960),
            "invalid_params",
            "/channels",
            "takes channels 2, got 1",
        ),
        ("frame magic", b"CFRM" + good[4:], "bad_envelope", "/reserved", "frame header"),  # read as a frame
        ("over budget", largest, "rate_limited", "", "max_audio_bytes_per_second"),
    ]
    # One byte a second: the burst still lets the largest message through once, then nothing.
    async with running(tmp_path, "process", limits=Limits(max_audio_bytes_per_second=1)) as daemon:
        async with open_websocket_url(daemon.url) as ws:
            await ws.send_message(largest)  # spends the burst
            for name, message, code, path, words in cases:
                await ws.send_message(message)
                with trio.fail_after(5):
                    while (error := _error_of(await ws.get_message())) is None:
                        pass
                assert (error["code"], error.get("path")) == (code, path), (name, error)
                assert words in error["message"], (name, error["message"])
            # The connection is still usable: a request is answered.
            await ws.send_message(
                json.dumps(
                    {
                        "type": "request",
                        "correlation_id": "g",
                        "payload": {"action": "getpipeline", "session_id": daemon.session_id},
                    }
                )
            )
            with trio.fail_after(5):
                while json.loads(await ws.get_message()).get("correlation_id") != "g":
                    pass
        # Only the first (valid, in budget) message reached the node; another connection has its own budget.
        async with open_client(daemon.url) as client:
            events = client.events()
            await client.push_audio("mic", sine_s16(441), RATE)
            stats = await stats_until(events, "mic", lambda s: s["messages_received"] >= 2)
            assert stats["messages_received"] == 2 and stats["samples_received"] == 19200 + 441
