"""Small test clips made with PyAV, so no binary media is committed.

Frame ``i`` of a clip: the top half is red on the left and blue on the right
(orientation), the bottom half is grey at level ``grey_of(i)`` (the frame
number modulo 30, read back with ``frame_number_of``). Flat areas keep the colours
exact through 4:2:0 chroma subsampling.
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
