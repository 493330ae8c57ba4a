"""The sound beside the picture in an encoded output (``sink::file``, ``sink::stream``).

An output has an audio stream when the first frame it writes carries sound
(``SinkFrame.audio``): its sample rate and channel layout come from that
block. A first frame without sound makes a video-only output, and sound that
arrives later is not recorded (counted in ``audio_blocks_ignored``): a
container's streams are fixed once its header is written. Send the node's
params again to start an output with sound.

Timestamps: the audio stream's time base is ``1 / sample_rate`` and a
block's pts is its ``start_sample`` minus the sample of the first written
frame's ``media_time`` (``samples_until``), the same zero as the video's pts,
so picture and sound are in sync by construction. The encoder takes frames
of its own size (AAC 1024, Opus 960 samples), cut here from the run of
blocks; the encoder's priming (AAC 1024, Opus 312 samples) is FFmpeg's to
signal: the first packet's pts is negative, and MP4 (edit list), Matroska and
WebM (codec delay) tell the decoder to drop it, while MPEG-TS and FLV place
it before the first video frame.

Blocks of one compositor are contiguous. A frame that never reached the
encoder (a full sink queue, a helper that was not reading) takes its sound
with it: the gap is filled with silence, so later sound keeps its place
(MP4 players ignore audio timestamp gaps and would play it early).
A frame without sound in an output that has an audio stream (the compositor
lost its last input with sound) gets silence for its slot, so the track runs
on beside the picture and sound that comes back lands in its place.
Opus encodes at 48 kHz (or 24, 16, 12, 8): sound at another rate (a
compositor at 44.1 kHz) is resampled to 48 kHz here (PyAV's
``AudioResampler``, libswresample), after gaps are filled, so the stream it
resamples is contiguous and its output is stamped by counting samples.
A gap over :data:`MAX_SILENCE_FILL_S` is not filled (that many seconds of
silence would hold up the sink's thread): the pts jump instead. Sound from
before the previous block's end (or before the first frame) is cut.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av
import numpy as np

from compositord.daemon.engine.audio.bus import AudioBlock, samples_until, silence
from compositord.daemon.engine.sinks.base import SinkError

# audio_codec param -> FFmpeg encoder
AUDIO_ENCODERS = {"aac": "aac", "opus": "libopus"}
# FFmpeg muxer -> the audio codecs it holds here, the first being what ``audio_codec`` ``auto`` means.
# Opus in MP4 is refused (most MP4 players cannot play it); WebM holds only Vorbis and Opus.
MUXER_AUDIO_CODECS = {
    "mp4": ("aac",),
    "matroska": ("aac", "opus"),
    "webm": ("opus",),
    "mpegts": ("aac",),
    "flv": ("aac",),
}
LAYOUTS = {1: "mono", 2: "stereo"}
OPUS_RATES = (48_000, 24_000, 16_000, 12_000, 8_000)
OPUS_RESAMPLE_RATE = 48_000
MAX_SILENCE_FILL_S = 10.0
DEFAULT_AUDIO_BITRATE_KBPS = 128


def resolve_audio_codec(requested: str, muxer: str) -> str | None:
    """The audio codec an output uses (None: no audio stream), or SinkError when the container cannot hold it."""
    if requested == "none":
        return None
    held = MUXER_AUDIO_CODECS.get(muxer, ())
    if requested == "auto":
        return held[0] if held else None
    if requested not in held:
        choices = " or ".join(held) if held else "no audio"
        raise SinkError(f"{muxer} cannot hold {requested} audio here; use audio_codec {choices} (or none)")
    return requested


class AudioTrack:
    """One output's audio stream: blocks in, encoded packets muxed (the sink's worker thread only)."""

    def __init__(self, container: Any, codec: str, first: AudioBlock, origin_time: float, bitrate_kbps: int) -> None:
        encoder = AUDIO_ENCODERS[codec]
        if encoder not in av.codecs_available:
            raise SinkError(f"this build of PyAV has no {encoder} encoder for audio_codec {codec!r}")
        if first.channels not in LAYOUTS:
            raise SinkError(f"the compositor's sound has {first.channels} channels; outputs take mono or stereo")
        self.codec = codec
        self.sample_rate = first.sample_rate
        self.channels = first.channels
        self._container = container
        # The rate the encoder runs at: the sound's own, except for Opus, which takes only a few.
        self.encoder_rate = OPUS_RESAMPLE_RATE if codec == "opus" and first.sample_rate not in OPUS_RATES else first.sample_rate
        self._resampler = (
            av.AudioResampler(format="flt", layout=LAYOUTS[first.channels], rate=self.encoder_rate)
            if self.encoder_rate != first.sample_rate
            else None
        )
        stream = container.add_stream(encoder, rate=self.encoder_rate)
        stream.layout = LAYOUTS[first.channels]
        # The encoder's own sample format, so PyAV has nothing to convert: AAC planar float, Opus packed float.
        self._planar = encoder == "aac"
        stream.format = "fltp" if self._planar else "flt"
        stream.bit_rate = int(bitrate_kbps) * 1000
        # Frames are stamped in samples. Not in ``stream.time_base``: the muxer may change that once it writes
        # its header (MPEG-TS to 1/90000, Matroska to 1/1000), and PyAV rescales from the frame's own.
        self._time_base = Fraction(1, self.encoder_rate)
        stream.time_base = self._time_base
        stream.codec_context.open()
        self._stream = stream
        self._frame_size = int(stream.codec_context.frame_size) or 1024
        self._origin = samples_until(origin_time, first.sample_rate)
        self._next = self._origin  # the render loop's sample (at the sound's rate) the next one queued is
        self._pending = silence(0, self.channels)  # at the encoder's rate
        self._pending_start = 0  # the pts of the first pending sample (encoder rate, from the origin)
        self.samples_encoded = 0
        self.silence_filled_samples = 0
        self.samples_cut = 0
        self.gaps_left = 0

    def check(self, block: AudioBlock) -> None:
        """SinkError when ``block`` cannot go into this stream (checked before its frame's picture is encoded)."""
        if block.sample_rate != self.sample_rate or block.channels != self.channels:
            raise SinkError(
                f"the compositor's sound changed from {self.sample_rate} Hz {LAYOUTS[self.channels]} to"
                f" {block.sample_rate} Hz {LAYOUTS.get(block.channels, f'{block.channels} channels')};"
                " send the node's params again to start a new output"
            )

    def write(self, block: AudioBlock) -> int:
        """Queue ``block``'s sound and encode every whole encoder frame; the encoded byte count."""
        self.check(block)
        samples, start = block.samples, block.start_sample
        if start < self._next:  # sound from before the origin, or overlapping what was queued
            cut = min(self._next - start, len(samples))
            self.samples_cut += cut
            samples, start = samples[cut:], start + cut
        if len(samples) == 0:
            return 0
        written = 0
        gap = start - self._next
        if gap > 0:
            if gap <= MAX_SILENCE_FILL_S * self.sample_rate:
                self.silence_filled_samples += gap
                self._append(silence(gap, self.channels))
            else:
                self._pad_to_frame()
                written += self._encode_pending(final=False)
                self.gaps_left += 1  # the pts jump
                self._pending_start = round((start - self._origin) * self.encoder_rate / self.sample_rate)
                self._next = start
        self._append(samples)
        return written + self._encode_pending(final=False)

    def fill_until(self, end_sample: int) -> int:
        """Silence up to ``end_sample`` (a frame without sound: its slot stays silent); the encoded byte count."""
        gap = end_sample - self._next
        if gap <= 0:
            return 0
        self.silence_filled_samples += gap
        self._append(silence(gap, self.channels))
        return self._encode_pending(final=False)

    def finish(self) -> int:
        """Encode what is queued (a short last frame) and drain the encoder; the encoded byte count."""
        if self._resampler is not None:
            self._queue(self._resampled(None))  # what the resampler still holds
        written = self._encode_pending(final=True)
        packets = self._stream.encode(None)
        self._container.mux(packets)
        return written + sum(packet.size for packet in packets)

    def stats(self) -> dict[str, Any]:
        return {
            "codec": self.codec,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "encoder_sample_rate": self.encoder_rate,
            "seconds_encoded": round(self.samples_encoded / self.encoder_rate, 3),
            "silence_filled_seconds": round(self.silence_filled_samples / self.sample_rate, 3),
            "gaps_left": self.gaps_left,
        }

    def _append(self, samples: np.ndarray) -> None:
        """Queue sound at its own rate (resampled for the encoder when it runs at another)."""
        self._next += len(samples)
        self._queue(self._resampled(samples) if self._resampler is not None else samples)

    def _queue(self, samples: np.ndarray) -> None:
        self._pending = np.concatenate((self._pending, samples)) if len(self._pending) else samples

    def _pad_to_frame(self) -> None:
        """Only an encoder's last frame may be short: before the pts jump, what is queued is padded to a whole frame."""
        self._queue(silence(-len(self._pending) % self._frame_size, self.channels))

    def _resampled(self, samples: np.ndarray | None) -> np.ndarray:
        assert self._resampler is not None
        frame = None
        if samples is not None:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(samples, dtype=np.float32).reshape(1, -1), format="flt", layout=LAYOUTS[self.channels]
            )
            frame.sample_rate = self.sample_rate
        out = [f.to_ndarray().reshape(-1, self.channels) for f in self._resampler.resample(frame)]
        return np.concatenate(out) if out else silence(0, self.channels)

    def _encode_pending(self, *, final: bool) -> int:
        size = self._frame_size
        whole = len(self._pending) if final else len(self._pending) // size * size
        written = 0
        for offset in range(0, whole, size):
            written += self._encode(self._pending[offset : offset + size], self._pending_start + offset)
        self._pending = self._pending[whole:]
        self._pending_start += whole
        return written

    def _encode(self, chunk: np.ndarray, pts: int) -> int:
        chunk = np.asarray(chunk, dtype=np.float32)
        if self._planar:
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.T), format="fltp", layout=LAYOUTS[self.channels])
        else:
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk).reshape(1, -1), format="flt", layout=LAYOUTS[self.channels]
            )
        frame.sample_rate = self.encoder_rate
        frame.pts = pts
        frame.time_base = self._time_base
        packets = self._stream.encode(frame)
        self._container.mux(packets)
        self.samples_encoded += len(chunk)
        return sum(packet.size for packet in packets)
