"""Pushed audio (PROTOCOL.md section 6.1): the 32-byte header of a binary PCM message.

Layout, little-endian, 32 bytes, then the samples::

    offset size field
         0    4 magic          b"CPCM"
         4    1 version        AUDIO_VERSION (1)
         5    1 sample_format  0 s16le, 1 f32le, 2 s32le
         6    1 channels       1 (mono) or 2 (stereo: left, right)
         7    1 reserved       0
         8    8 node_id_hash   frames.node_id_hash(node_id), as in a frame header
        16    4 sample_rate    one of SAMPLE_RATES (Hz)
        20    4 sample_count   samples per channel: 1 .. sample_rate / 5 (at most 200 ms)
        24    8 pts_us         the first sample's time in microseconds (signed)

The samples are interleaved (``L R L R ...`` for stereo) and must be exactly
``sample_count * channels * bytes_per_sample`` bytes long. Floats are finite
values in [-1, 1] (louder ones are clipped by the engine); NaN and infinities
are read as silence. Any mismatch of the header is a :class:`RemoteProtocolError`
whose path names the header field (``/sample_rate``), so a binary error reads
like a text one; the message is dropped.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from compositord.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from compositord.protocol.frames import AUDIO_MAGIC, MAX_BINARY_BYTES, node_id_hash

AUDIO_VERSION = 1
HEADER = struct.Struct("<4sBBBBQIIq")
HEADER_SIZE = HEADER.size  # 32

# Index = wire code; the value is the bytes of one sample of one channel.
SAMPLE_FORMATS: tuple[str, ...] = ("s16le", "f32le", "s32le")
BYTES_PER_SAMPLE: dict[str, int] = {"s16le": 2, "f32le": 4, "s32le": 4}
SAMPLE_RATES: tuple[int, ...] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 88200, 96000)
CHANNELS: tuple[int, ...] = (1, 2)
# A message holds at most this share of a second: the engine's jitter buffer keeps one message beyond its latency.
MAX_MESSAGE_FRACTION = 5  # sample_count <= sample_rate / 5 (200 ms)

assert HEADER_SIZE == 32


def max_sample_count(sample_rate: int) -> int:
    """The most samples per channel one message may carry at ``sample_rate`` (200 ms of sound)."""
    return sample_rate // MAX_MESSAGE_FRACTION


def payload_size(sample_format: str, channels: int, sample_count: int) -> int:
    return sample_count * channels * BYTES_PER_SAMPLE[sample_format]


MAX_MESSAGE_BYTES = HEADER_SIZE + payload_size("f32le", max(CHANNELS), max_sample_count(max(SAMPLE_RATES)))


@dataclass(frozen=True)
class AudioHeader:
    node_id_hash: int
    sample_format: str  # "s16le" | "f32le" | "s32le"
    channels: int
    sample_rate: int
    sample_count: int
    pts_us: int
    version: int = AUDIO_VERSION

    @property
    def payload_size(self) -> int:
        return payload_size(self.sample_format, self.channels, self.sample_count)

    @property
    def duration_us(self) -> float:
        return self.sample_count * 1_000_000 / self.sample_rate


def _refuse(path: str, message: str, code: ErrorCode = ErrorCode.BAD_ENVELOPE) -> RemoteProtocolError:
    return RemoteProtocolError(code, f"audio header {path or '/'}: {message}", path)


def is_audio_message(data: bytes | bytearray | memoryview) -> bool:
    """Whether a binary message is pushed audio (its magic), as opposed to a pushed frame."""
    return bytes(data[:4]) == AUDIO_MAGIC


def parse_audio_header(data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_BINARY_BYTES) -> AudioHeader:
    """The header of one binary PCM message, checked against the message's byte count.

    The samples are ``data[HEADER_SIZE:]``.
    """
    size = len(data)
    if size > max_bytes:
        raise _refuse("", f"message of {size} bytes is over the limit of {max_bytes}", ErrorCode.TOO_LARGE)
    if size < HEADER_SIZE:
        raise _refuse("", f"message of {size} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, version, format_code, channels, reserved, hashed, sample_rate, sample_count, pts_us = HEADER.unpack_from(data, 0)
    if magic != AUDIO_MAGIC:
        raise _refuse("/magic", f"must be {AUDIO_MAGIC!r}, got {bytes(magic)!r}")
    if version != AUDIO_VERSION:
        raise _refuse("/version", f"unsupported version {version}; this daemon speaks {AUDIO_VERSION}")
    if format_code >= len(SAMPLE_FORMATS):
        raise _refuse(
            "/sample_format",
            f"unknown code {format_code}; known: " + ", ".join(f"{i} {name}" for i, name in enumerate(SAMPLE_FORMATS)),
        )
    if channels not in CHANNELS:
        raise _refuse("/channels", f"must be 1 (mono) or 2 (stereo), got {channels}")
    if reserved != 0:
        raise _refuse("/reserved", "must be 0")
    if sample_rate not in SAMPLE_RATES:
        raise _refuse("/sample_rate", f"must be one of {', '.join(map(str, SAMPLE_RATES))} Hz, got {sample_rate}")
    most = max_sample_count(sample_rate)
    if not 1 <= sample_count <= most:
        raise _refuse("/sample_count", f"must be between 1 and {most} (200 ms at {sample_rate} Hz), got {sample_count}")
    sample_format = SAMPLE_FORMATS[format_code]
    expected = payload_size(sample_format, channels, sample_count)
    if size - HEADER_SIZE != expected:
        raise _refuse(
            "",
            f"{sample_count} samples of {channels} channel(s) {sample_format} need {expected} bytes, "
            f"the message has {size - HEADER_SIZE}",
        )
    return AudioHeader(hashed, sample_format, channels, sample_rate, sample_count, pts_us, version)


def pack_audio_header(node_id: str, sample_format: str, channels: int, sample_rate: int, sample_count: int, pts_us: int) -> bytes:
    """The 32 header bytes for PCM of ``node_id``; append the interleaved samples to send it."""
    if sample_format not in SAMPLE_FORMATS:
        raise LocalProtocolError(f"unknown sample format {sample_format!r}; known: {', '.join(SAMPLE_FORMATS)}")
    if channels not in CHANNELS:
        raise LocalProtocolError(f"channels must be 1 or 2, got {channels}")
    if sample_rate not in SAMPLE_RATES:
        raise LocalProtocolError(f"sample rate {sample_rate} is not one of {', '.join(map(str, SAMPLE_RATES))}")
    if not 1 <= sample_count <= max_sample_count(sample_rate):
        raise LocalProtocolError(
            f"sample_count {sample_count} out of 1..{max_sample_count(sample_rate)} (200 ms at {sample_rate} Hz)"
        )
    if not -(2**63) <= pts_us < 2**63:
        raise LocalProtocolError(f"pts_us {pts_us} does not fit a signed 64-bit integer")
    return HEADER.pack(
        AUDIO_MAGIC,
        AUDIO_VERSION,
        SAMPLE_FORMATS.index(sample_format),
        channels,
        0,
        node_id_hash(node_id),
        sample_rate,
        sample_count,
        pts_us,
    )
