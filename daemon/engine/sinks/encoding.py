"""The PyAV encoder shared by ``sink::file`` and ``sink::stream``.

One stream per output, 4:2:0, time base 1/fps of the first frame: a frame's
pts is its slot on the render loop's clock (``SinkFrame.media_time``) counted
from the first frame this sink wrote, so dropped slots leave gaps and
timestamps never go backwards. ``finish`` flushes the encoder and writes the
container trailer (the MP4 ``moov`` box): a file finished this way plays.

Sound goes beside the picture when the first frame written carries it
(``sinks/audio_track.py``: the rule, the timestamps, gaps); the audio
encoder is flushed before the container is closed.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av

from compositord.daemon.engine.audio.bus import samples_until
from compositord.daemon.engine.sinks import convert
from compositord.daemon.engine.sinks.audio_track import DEFAULT_AUDIO_BITRATE_KBPS, AudioTrack, resolve_audio_codec
from compositord.daemon.engine.sinks.base import Sink, SinkError, SinkFrame

# codec param -> FFmpeg encoder name
ENCODERS = {"h264": "libx264", "vp9": "libvpx-vp9", "av1": "libsvtav1"}

# preset param -> (libvpx cpu-used, SVT-AV1 preset); x264 takes the names as they are
_PRESET_SCALE = {
    "ultrafast": (8, 12),
    "superfast": (7, 11),
    "veryfast": (6, 10),
    "faster": (5, 9),
    "fast": (4, 8),
    "medium": (3, 7),
    "slow": (2, 6),
}


# AVColorSpace / AVColorPrimaries / AVColorTransferCharacteristic numbers (libavutil/pixfmt.h);
# color_range 1 = MPEG (limited).
COLOR_TAGS = {
    "bt709": {"colorspace": 1, "color_primaries": 1, "color_trc": 1, "color_range": 1},
    "bt601": {"colorspace": 6, "color_primaries": 6, "color_trc": 6, "color_range": 1},
}


def encoder_available(codec: str) -> bool:
    return ENCODERS[codec] in av.codecs_available


def encoder_options(codec: str, preset: str, *, low_latency: bool) -> dict[str, str]:
    if codec == "h264":
        options = {"preset": preset}
        if low_latency:
            options["tune"] = "zerolatency"
        return options
    cpu_used, svt_preset = _PRESET_SCALE[preset]
    if codec == "vp9":
        return {"deadline": "realtime", "cpu-used": str(cpu_used), "row-mt": "1"}
    return {"preset": str(svt_preset)}


class EncoderSink(Sink):
    """Encodes frames into a PyAV output container; subclasses say where (``target``)."""

    low_latency = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._container: Any = None
        self._stream: Any = None
        self._first_time: float | None = None
        self._last_pts = -1
        self._size: tuple[int, int] | None = None
        self._audio: AudioTrack | None = None
        self.audio_blocks_ignored = 0  # sound offered to an output opened without an audio stream

    # subclass hooks
    def target(self) -> tuple[str, str, dict[str, str]]:
        """``(url or path, FFmpeg format name, container options)``."""
        raise NotImplementedError

    def codec(self) -> str:
        return str(self.params.get("codec", "h264"))

    def stats(self) -> dict[str, Any]:
        audio = self._audio
        return {
            **super().stats(),
            "audio": audio.stats() if audio is not None else None,
            "audio_blocks_ignored": self.audio_blocks_ignored,
        }

    def open(self, first: SinkFrame) -> None:
        codec = self.codec()
        if not encoder_available(codec):
            raise SinkError(f"this build of PyAV has no {ENCODERS[codec]} encoder for codec {codec!r}")
        frame = first.frame
        if frame.width % 2 or frame.height % 2:
            raise SinkError(f"{codec} in 4:2:0 needs an even frame size; the compositor makes {frame.width}x{frame.height}")
        url, format_name, container_options = self.target()
        fps = max(1, int(first.fps))
        self._container = av.open(url, mode="w", format=format_name, options=container_options)
        stream = self._container.add_stream(ENCODERS[codec], rate=fps)
        stream.width = frame.width
        stream.height = frame.height
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = int(self.params.get("bitrate_kbps", 4000)) * 1000
        stream.time_base = Fraction(1, fps)
        stream.codec_context.time_base = Fraction(1, fps)
        # Tag the stream with the compositor's matrix (limited range), so players convert back as it was made.
        for attribute, value in COLOR_TAGS[frame.color_matrix].items():
            setattr(stream.codec_context, attribute, value)
        stream.options = encoder_options(codec, str(self.params.get("preset", "veryfast")), low_latency=self.low_latency)
        self._stream = stream
        self._size = (frame.width, frame.height)
        self._first_time = first.media_time
        audio_codec = resolve_audio_codec(str(self.params.get("audio_codec", "auto")), format_name)
        if first.audio is not None and audio_codec is not None:
            bitrate = int(self.params.get("audio_bitrate_kbps", DEFAULT_AUDIO_BITRATE_KBPS))
            self._audio = AudioTrack(self._container, audio_codec, first.audio, first.media_time, bitrate)

    def write(self, item: SinkFrame) -> None:
        size, first_time = self._size, self._first_time
        assert size is not None and first_time is not None, "the worker opens a sink before it writes"
        frame = item.frame
        if (frame.width, frame.height) != size:
            raise SinkError(
                f"the output size changed from {size[0]}x{size[1]} to {frame.width}x{frame.height}; "
                "send the node's params again to start a new output"
            )
        if item.audio is not None and self._audio is not None:
            self._audio.check(item.audio)
        video = convert.to_yuv420p(frame)
        rate = self._stream.time_base.denominator
        pts = max(self._last_pts + 1, round((item.media_time - first_time) * rate))
        video.pts = pts
        video.time_base = self._stream.time_base
        self._last_pts = pts
        packets = self._stream.encode(video)
        self._container.mux(packets)
        written = sum(packet.size for packet in packets)
        if item.audio is not None:
            if self._audio is not None:
                written += self._audio.write(item.audio)
            else:
                self.audio_blocks_ignored += 1
        elif self._audio is not None:
            written += self._audio.fill_until(samples_until(item.media_time + 1 / item.fps, self._audio.sample_rate))
        self.wrote(written)

    def wrote(self, count: int) -> None:
        """``count`` encoded bytes went to the output (a file sink watches its disk with it)."""

    def finish(self) -> None:
        container, self._container = self._container, None
        if container is None:
            return
        try:
            if self._stream is not None:
                container.mux(self._stream.encode(None))  # drain the encoder's delayed frames
            if self._audio is not None:
                self._audio.finish()
        finally:
            container.close()  # writes the trailer
