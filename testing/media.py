"""Small test clips made with PyAV, so no binary media is committed.

Frame ``i`` of a clip: the top half is red on the left and blue on the right
(orientation), the bottom half is grey at level ``grey_of(i)`` (the frame
number modulo 30, read back with ``frame_number_of``). Flat areas keep the colours
exact through 4:2:0 chroma subsampling.

Clips with sound (``write_clip_with_sound``): a sine of known frequency, all
along, or only in a burst at the start of each white *flash* frame (every
``flash_every`` frames, the whole picture white, ``is_flash``), so a test can
find the flash in the pictures and the burst in the sound and compare when
each was played.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RED = (200, 40, 40)
BLUE = (40, 40, 200)
GREY_BASE = 20
GREY_STEP = 7  # levels per frame number


FRAME_NUMBERS = 30  # grey levels repeat after this many frames (they stay below 235)


def grey_of(index: int) -> int:
    return GREY_BASE + GREY_STEP * (index % FRAME_NUMBERS)


def pattern(index: int, width: int = 64, height: int = 48) -> np.ndarray:
    """(h, w, 3) uint8 RGB of frame ``index``."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[: height // 2, : width // 2] = RED
    image[: height // 2, width // 2 :] = BLUE
    image[height // 2 :] = grey_of(index)
    return image


def frame_number_of(rgb: np.ndarray) -> int:
    """The frame number a decoded (h, w, 3+) RGB frame shows (its bottom half's grey level)."""
    height, width = rgb.shape[:2]
    level = float(np.median(rgb[height * 3 // 4, width // 4 : width * 3 // 4, :3]))
    return round((level - GREY_BASE) / GREY_STEP)


def write_clip(
    path: Path,
    *,
    frames: int = 10,
    fps: int = 30,
    width: int = 64,
    height: int = 48,
    codec: str = "ffv1",
    first_number: int = 0,
) -> Path:
    """Encode ``frames`` pattern frames numbered from ``first_number``; ``ffv1`` (in .mkv) is lossless
    and in every FFmpeg build."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        assert isinstance(stream, av.VideoStream), f"{codec} is not a video codec"
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = Fraction(1, fps)
        if codec == "libx264":
            stream.options = {"qp": "0", "g": "5"}  # lossless; a key frame every 5 frames, so seeks land between them
        for index in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(first_number + index, width, height), format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


WHITE = 235  # a flash frame's level (limited-range white survives every conversion unclipped)


def is_flash(rgb: np.ndarray) -> bool:
    """A decoded (h, w, 3+) RGB frame is a flash frame (white all over; the pattern's brightest is far darker)."""
    return float(np.median(rgb[..., :3])) > 225


def sine(count: int, frequency_hz: float, sample_rate: int, *, first_sample: int = 0, level: float = 0.5) -> np.ndarray:
    """``count`` samples of a sine (float64, peak ``level``), phase continuous from sample ``first_sample``."""
    index = np.arange(first_sample, first_sample + count, dtype=np.float64)
    return level * np.sin(2 * np.pi * frequency_hz * index / sample_rate)


def write_clip_with_sound(
    path: Path,
    *,
    frames: int = 25,
    fps: int = 25,
    width: int = 64,
    height: int = 48,
    codec: str = "ffv1",
    audio_codec: str = "flac",
    sample_rate: int = 44_100,
    layout: str = "mono",
    tone_hz: float = 1000.0,
    level: float = 0.5,
    flash_every: int | None = None,
    burst_ms: float = 40.0,
) -> Path:
    """A pattern clip (``write_clip``'s frames) with a sound track as long as its pictures: a sine of
    ``tone_hz`` all along, or, with ``flash_every``, frames ``0, flash_every, ...`` white and the sine only
    for ``burst_ms`` from the start of each of those frames (silence between)."""
    duration_samples = round(frames * sample_rate / fps)
    tone = sine(duration_samples, tone_hz, sample_rate, level=level)
    if flash_every is not None:
        gate = np.zeros(duration_samples, dtype=bool)
        burst = round(burst_ms * sample_rate / 1000)
        for index in range(0, frames, flash_every):
            first = round(index * sample_rate / fps)
            gate[first : first + burst] = True
        tone = np.where(gate, tone, 0.0)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        assert isinstance(video, av.VideoStream), f"{codec} is not a video codec"
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.time_base = Fraction(1, fps)
        audio = container.add_stream(audio_codec, rate=sample_rate, layout=layout)
        assert isinstance(audio, av.AudioStream), f"{audio_codec} is not an audio codec"
        audio.time_base = Fraction(1, sample_rate)
        channels = audio.layout.nb_channels
        to_codec = av.AudioResampler(format=audio.format.name, layout=layout, rate=sample_rate)
        chunk = audio.codec_context.frame_size or 1024
        pictures = 0
        for first in range(0, duration_samples, chunk):
            samples = tone[first : first + chunk].astype(np.float32)
            planar = np.repeat(samples[np.newaxis, :], channels, axis=0)
            sound = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
            sound.sample_rate, sound.pts, sound.time_base = sample_rate, first, Fraction(1, sample_rate)
            for converted in to_codec.resample(sound):
                for packet in audio.encode(converted):
                    container.mux(packet)
            # Pictures up to the same time, so the file interleaves them as a recording would.
            while pictures < frames and pictures * sample_rate / fps <= first + chunk:
                image = pattern(pictures, width, height)
                if flash_every is not None and pictures % flash_every == 0:
                    image[...] = WHITE
                picture = av.VideoFrame.from_ndarray(image, format="rgb24")
                picture.pts, picture.time_base = pictures, Fraction(1, fps)
                for packet in video.encode(picture):
                    container.mux(packet)
                pictures += 1
        for converted in to_codec.resample(None):
            for packet in audio.encode(converted):
                container.mux(packet)
        for stream in (audio, video):
            for packet in stream.encode():
                container.mux(packet)
    return path


def i420_to_rgb(data: np.ndarray, width: int, height: int, matrix: str = "bt601") -> np.ndarray:
    """Limited-range I420 (tightly packed) to (h, w, 3) float RGB 0..255, for checking decoded frames."""
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    chroma_w, chroma_h = (width + 1) // 2, (height + 1) // 2
    luma = data[: width * height].reshape(height, width).astype(float)
    cb = data[width * height : width * height + chroma_w * chroma_h].reshape(chroma_h, chroma_w).astype(float)
    cr = data[width * height + chroma_w * chroma_h :].reshape(chroma_h, chroma_w).astype(float)
    cb = cb.repeat(2, 0).repeat(2, 1)[:height, :width] - 128.0
    cr = cr.repeat(2, 0).repeat(2, 1)[:height, :width] - 128.0
    y = (luma - 16.0) * 255.0 / 219.0
    kr, kb = (0.299, 0.114) if matrix == "bt601" else (0.2126, 0.0722)
    scale = 255.0 / 224.0
    r = y + 2 * (1 - kr) * cr * scale
    b = y + 2 * (1 - kb) * cb * scale
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255)


def main(argv: list[str] | None = None) -> int:
    """``python -m compositord.testing.media OUT [--frames N] [--fps F] [--size WxH]``: write a test clip
    (H.264 for .mp4 where the build has libx264, FFV1 for .mkv)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m compositord.testing.media", description=main.__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--frames", type=int, default=90)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--size", default="640x360", help="WIDTHxHEIGHT, even numbers")
    args = parser.parse_args(argv)
    width, height = (int(part) for part in args.size.lower().split("x"))
    codec = "ffv1" if args.out.suffix == ".mkv" else ("libx264" if "libx264" in av.codecs_available else "mpeg4")
    frames = args.frames
    write_clip(args.out, frames=frames, fps=args.fps, width=width, height=height, codec=codec)
    print(f"{args.out}: {frames} frames {width}x{height} at {args.fps} fps ({codec})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
