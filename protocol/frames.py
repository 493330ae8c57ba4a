"""Pushed video frames (PROTOCOL.md section 6): the 32-byte header of a binary message.

Layout, little-endian, 32 bytes, then the frame bytes::

    offset size field
         0    4 magic          b"CFRM"
         4    1 version        FRAME_VERSION (1)
         5    1 pixel_format   0 rgba8, 1 nv12, 2 i420
         6    2 reserved       0
         8    8 node_id_hash   node_id_hash(node_id): first 8 bytes of BLAKE2b, as u64
        16    4 width          1 .. 7680
        20    4 height         1 .. 7680
        24    8 pts_us         presentation time in microseconds (signed)

The frame bytes that follow must be exactly ``frame_size(pixel_format, width,
height)`` long: rgba8 is 4*w*h; nv12 and i420 are w*h*3/2 and need an even
width and height. Any mismatch is a :class:`RemoteProtocolError`: the frame is
dropped and the input keeps its last good frame.

The error paths name header fields as JSON pointers (``/magic``, ``/width``),
so a binary error reads like a text one.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from compositord.protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError

FRAME_MAGIC = b"CFRM"
# The other kind of binary message, pushed audio (section 6.1, protocol/pcm.py): the magic tells them apart.
AUDIO_MAGIC = b"CPCM"
FRAME_VERSION = 1
HEADER = struct.Struct("<4sBBHQIIq")
HEADER_SIZE = HEADER.size  # 32
MAX_DIMENSION = 7680
MAX_BINARY_BYTES = 32 * 1024 * 1024  # PROTOCOL.md section 1 default

PIXEL_FORMATS: tuple[str, ...] = ("rgba8", "nv12", "i420")  # index = wire code

assert HEADER_SIZE == 32


def node_id_hash(node_id: str) -> int:
    """The 64-bit id of a node in frame headers (a client computes it the same way)."""
    return int.from_bytes(hashlib.blake2b(node_id.encode("utf-8"), digest_size=8).digest(), "little")


def frame_size(pixel_format: str, width: int, height: int) -> int:
    """Bytes of one frame: RGBA8 4*w*h; NV12/I420 w*h*3/2 (even sizes only)."""
    if pixel_format == "rgba8":
        return 4 * width * height
    return width * height * 3 // 2


@dataclass(frozen=True)
class FrameHeader:
    node_id_hash: int
    width: int
    height: int
    pixel_format: str  # "rgba8" | "nv12" | "i420", as in params
    pts_us: int
    version: int = FRAME_VERSION

    @property
    def frame_size(self) -> int:
        return frame_size(self.pixel_format, self.width, self.height)


def _refuse(path: str, message: str, code: ErrorCode = ErrorCode.BAD_ENVELOPE) -> RemoteProtocolError:
    return RemoteProtocolError(code, f"frame header {path}: {message}", path)


def parse_frame_header(data: bytes | bytearray | memoryview, *, max_bytes: int = MAX_BINARY_BYTES) -> FrameHeader:
    """The header of one binary message, checked against the message's byte count.

    The frame bytes are ``data[HEADER_SIZE:]``.
    """
    size = len(data)
    if size > max_bytes:
        raise _refuse("", f"message of {size} bytes is over the limit of {max_bytes}", ErrorCode.TOO_LARGE)
    if size < HEADER_SIZE:
        raise _refuse("", f"message of {size} bytes is shorter than the {HEADER_SIZE}-byte header")
    magic, version, format_code, reserved, hashed, width, height, pts_us = HEADER.unpack_from(data, 0)
    if magic != FRAME_MAGIC:
        raise _refuse(
            "/magic", f"must be {FRAME_MAGIC!r} (a frame) or {AUDIO_MAGIC!r} (audio, section 6.1), got {bytes(magic)!r}"
        )
    if version != FRAME_VERSION:
        raise _refuse("/version", f"unsupported version {version}; this daemon speaks {FRAME_VERSION}")
    if format_code >= len(PIXEL_FORMATS):
        raise _refuse(
            "/pixel_format",
            f"unknown code {format_code}; known: " + ", ".join(f"{i} {name}" for i, name in enumerate(PIXEL_FORMATS)),
        )
    if reserved != 0:
        raise _refuse("/reserved", "must be 0")
    pixel_format = PIXEL_FORMATS[format_code]
    for name, value in (("width", width), ("height", height)):
        if not 1 <= value <= MAX_DIMENSION:
            raise _refuse(f"/{name}", f"must be between 1 and {MAX_DIMENSION}, got {value}")
        if pixel_format != "rgba8" and value % 2:
            raise _refuse(f"/{name}", f"must be even for {pixel_format}, got {value}")
    expected = frame_size(pixel_format, width, height)
    if size - HEADER_SIZE != expected:
        raise _refuse(
            "",
            f"{width}x{height} {pixel_format} needs {expected} frame bytes, the message has {size - HEADER_SIZE}",
        )
    return FrameHeader(hashed, width, height, pixel_format, pts_us, version)


def pack_frame_header(node_id: str, width: int, height: int, pixel_format: str, pts_us: int) -> bytes:
    """The 32 header bytes for a frame of ``node_id``; append the frame bytes to send it."""
    if pixel_format not in PIXEL_FORMATS:
        raise LocalProtocolError(f"unknown pixel format {pixel_format!r}")
    if not (1 <= width <= MAX_DIMENSION and 1 <= height <= MAX_DIMENSION):
        raise LocalProtocolError(f"frame size {width}x{height} out of 1..{MAX_DIMENSION}")
    if pixel_format != "rgba8" and (width % 2 or height % 2):
        raise LocalProtocolError(f"{pixel_format} needs an even width and height, got {width}x{height}")
    if not -(2**63) <= pts_us < 2**63:
        raise LocalProtocolError(f"pts_us {pts_us} does not fit a signed 64-bit integer")
    return HEADER.pack(
        FRAME_MAGIC, FRAME_VERSION, PIXEL_FORMATS.index(pixel_format), 0, node_id_hash(node_id), width, height, pts_us
    )
