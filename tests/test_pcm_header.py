"""protocol/pcm.py: the pushed-audio header of PROTOCOL.md section 6.1, packed and parsed, every bad field refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from compositord.protocol import frames, pcm
from compositord.protocol.errors import LocalProtocolError, RemoteProtocolError


@st.composite
def headers(draw: st.DrawFn) -> tuple[str, str, int, int, int, int]:
    sample_rate = draw(st.sampled_from(pcm.SAMPLE_RATES))
    return (
        draw(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}", fullmatch=True)),
        draw(st.sampled_from(pcm.SAMPLE_FORMATS)),
        draw(st.sampled_from(pcm.CHANNELS)),
        sample_rate,
        draw(st.integers(1, pcm.max_sample_count(sample_rate))),
        draw(st.integers(-(2**63), 2**63 - 1)),
    )


@given(headers())
def test_a_packed_header_parses_back_to_what_was_packed(fields: tuple[str, str, int, int, int, int]) -> None:
    node_id, sample_format, channels, sample_rate, sample_count, pts_us = fields
    header = pcm.pack_audio_header(node_id, sample_format, channels, sample_rate, sample_count, pts_us)
    assert len(header) == pcm.HEADER_SIZE == 32
    payload = bytes(pcm.payload_size(sample_format, channels, sample_count))
    parsed = pcm.parse_audio_header(header + payload)
    assert parsed == pcm.AudioHeader(frames.node_id_hash(node_id), sample_format, channels, sample_rate, sample_count, pts_us)
    assert parsed.payload_size == len(payload)
    assert pcm.is_audio_message(header + payload) and not pcm.is_audio_message(frames.pack_frame_header("a", 2, 2, "rgba8", 0))


def test_header_layout_is_the_documented_one() -> None:
    header = pcm.pack_audio_header("mic", "f32le", 2, 44100, 441, -7)
    magic, version, sample_format, channels, reserved, hashed, rate, count, pts = pcm.HEADER.unpack(header)
    assert (magic, version, sample_format, channels, reserved, rate, count, pts) == (b"CPCM", 1, 1, 2, 0, 44100, 441, -7)
    assert hashed == frames.node_id_hash("mic")
    assert header[8:16] == frames.pack_frame_header("mic", 2, 2, "rgba8", 0)[8:16]  # the same node id hash as frames
    # The largest message the header allows: 200 ms of 96 kHz stereo floats.
    assert pcm.MAX_MESSAGE_BYTES == 32 + 19200 * 2 * 4


GOOD = pcm.pack_audio_header("mic", "s16le", 2, 48000, 480, 0) + bytes(480 * 2 * 2)


def _patched(offset: int, value: bytes) -> bytes:
    return GOOD[:offset] + value + GOOD[offset + len(value) :]


@pytest.mark.parametrize(
    ("name", "message", "path", "words"),
    [
        ("short", GOOD[:31], "", "shorter than the 32-byte header"),
        ("magic", _patched(0, b"CFRX"), "/magic", "b'CPCM'"),
        ("version", _patched(4, b"\x02"), "/version", "unsupported version 2"),
        ("format", _patched(5, b"\x03"), "/sample_format", "unknown code 3; known: 0 s16le, 1 f32le, 2 s32le"),
        ("no channels", _patched(6, b"\x00"), "/channels", "must be 1 (mono) or 2 (stereo), got 0"),
        ("six channels", _patched(6, b"\x06"), "/channels", "got 6"),
        ("reserved", _patched(7, b"\x01"), "/reserved", "must be 0"),
        ("rate", _patched(16, (47999).to_bytes(4, "little")), "/sample_rate", "got 47999"),
        ("no samples", _patched(20, (0).to_bytes(4, "little")), "/sample_count", "must be between 1 and 9600"),
        ("too long", _patched(20, (9601).to_bytes(4, "little")), "/sample_count", "200 ms at 48000 Hz"),
        ("byte count", GOOD[:-1], "", "need 1920 bytes, the message has 1919"),
        ("byte count over", GOOD + b"\0\0", "", "the message has 1922"),
    ],
)
def test_each_bad_field_is_refused_naming_it(name: str, message: bytes, path: str, words: str) -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        pcm.parse_audio_header(message)
    error = caught.value
    assert error.code == "bad_envelope", name
    assert error.path == path, name
    assert words in str(error), (name, str(error))


def test_a_message_over_the_binary_limit_is_too_large() -> None:
    with pytest.raises(RemoteProtocolError) as caught:
        pcm.parse_audio_header(GOOD, max_bytes=100)
    assert caught.value.code == "too_large"


@given(st.binary(max_size=200))
def test_any_bytes_either_parse_to_a_consistent_header_or_are_refused(data: bytes) -> None:
    try:
        header = pcm.parse_audio_header(data)
    except RemoteProtocolError as error:
        assert error.code == "bad_envelope"
        return
    assert len(data) == pcm.HEADER_SIZE + header.payload_size


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        (("u8", 2, 48000, 10, 0), "unknown sample format"),
        (("s16le", 3, 48000, 10, 0), "channels must be 1 or 2"),
        (("s16le", 2, 44000, 10, 0), "sample rate 44000"),
        (("s16le", 2, 48000, 0, 0), "sample_count 0 out of 1..9600"),
        (("s16le", 2, 48000, 9601, 0), "sample_count 9601"),
        (("s16le", 2, 48000, 10, 2**63), "signed 64-bit"),
    ],
)
def test_packing_refuses_what_the_daemon_would(fields: tuple[str, int, int, int, int], words: str) -> None:
    with pytest.raises(LocalProtocolError, match=words):
        pcm.pack_audio_header("mic", *fields)
