"""An ``av::stream_in`` node: network ingest through PyAV (RTMP pull or listen, MPEG-TS over UDP, RTSP, HLS, HTTP).

The stream is opened on the node's own receiver thread (``live_av``) with
open and read timeouts; the node is ``connecting`` until frames arrive, then
``live``; when the peer goes away (no data for ``read_timeout_s``, or the end
of the stream) it is ``connecting`` again and reopens at once; a failed
attempt is an error, retried with backoff. Frames are paced by the stream's
timestamps, ``latency_ms`` behind their arrival (``sources.pacing``). Where a
node may listen is the schema's policy (``allowed_ingest_listen``).

Sound (``audio``, default true): the stream's first audio stream is decoded
on the receiver thread and played by its timestamps, on the same mapping
as the pictures (``live_sound``), so the two keep the sender's relation;
``audio_time(t)`` is the render loop's time on that clock. The node's
``audio`` is its buffer whenever the param is true, so the mixer hears
silence, not nothing, while no sound arrives (connecting, a stream without
audio): what an output records does not depend on whether the peer had
connected when it started. ``audio: false`` leaves the sound undemuxed and
``audio`` None.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from compositord.daemon.engine.audio.timeline import PlayClock
from compositord.daemon.engine.sources.live_av import AVInput, LiveAVSource
from compositord.daemon.engine.sources.live_sound import LiveSound

# Pictures that may wait for late sound (latency_ms plus ~200 ms of MPEG-TS audio packing) at up to 60 fps.
PACER_CAPACITY = 24


def describe_stream_in(params: Mapping[str, Any]) -> AVInput:
    url = str(params["url"])
    scheme = url.split("://", 1)[0].lower()
    if scheme == "srt":
        raise ValueError("url: srt:// is not available: the FFmpeg bundled with PyAV has no SRT protocol")
    # A live stream is probed for half a second at most (FFmpeg's default of 5 s would hold back, then burst,
    # the first seconds), and read without demuxer buffering.
    options: dict[str, str] = {"analyzeduration": "500000", "fflags": "nobuffer"}
    if params.get("listen", False):
        options["listen"] = "1"
    if scheme == "udp":
        options["overrun_nonfatal"] = "1"  # a late reader loses datagrams instead of failing the stream
    fmt = str(params.get("format", "auto"))
    return AVInput(
        url,
        None if fmt == "auto" else fmt,
        options,
        label=url.split("?", 1)[0],
        open_timeout_s=float(params.get("open_timeout_s", 5.0)),
        read_timeout_s=float(params.get("read_timeout_s", 3.0)),
        latency_s=int(params.get("latency_ms", 100)) / 1000,
    )


class StreamInSource(LiveAVSource):
    def __init__(self, params: Mapping[str, Any]) -> None:
        self._sound = LiveSound(_PacerOf(self))
        self._play_clock = PlayClock()
        self._wants_audio = bool(params.get("audio", True))
        super().__init__(
            params,
            describe_stream_in,
            name="stream-in",
            audio_consumer=self._sound if self._wants_audio else None,
            pacer_capacity=PACER_CAPACITY,
        )

    def configure(self, params: Mapping[str, Any]) -> None:
        super().configure(params)
        wants_audio = bool(params.get("audio", True))
        if wants_audio != self._wants_audio:
            self._wants_audio = wants_audio
            self.attach_audio(self._sound if wants_audio else None)  # reopens: the demuxed streams change
        self.audio = self._sound.buffer if self._wants_audio else None

    def audio_time(self, t: float) -> float:
        """The local time of the sound that goes with ``frame(t)`` (``audio.timeline.PlayClock``)."""
        return self._play_clock.audio_time(t)


class _PacerOf:
    """The pacer of a source, looked up when used: the receiver thread uses it only once it runs, after
    ``LiveAVSource`` made the pacer."""

    def __init__(self, source: LiveAVSource) -> None:
        self._source = source

    def hold_for(self, pts: float, margin_s: float) -> None:
        self._source.pacer.hold_for(pts, margin_s)

    def due_time(self, pts: float) -> float | None:
        return self._source.pacer.due_time(pts)
