"""Image overlays and image sources: files from the asset directory, nothing else.

``resolve_asset`` is the gate between a client-supplied ``asset_path`` and
the file system: ``daemon.sandbox.resolve_input`` (shared with the sinks'
output paths) with an :class:`AssetError` that names the path and the reason:
absolute paths, ``..``, links out of the asset directory, /proc, /sys, /dev,
and anything that is not a regular file are refused.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from compositord.daemon.engine.sandbox import SandboxError, resolve_input

MAX_IMAGE_PIXELS = 7680 * 4320


class AssetError(ValueError):
    """A client-named asset cannot be used; the message says which and why."""


def resolve_asset(asset_dir: str | os.PathLike[str] | None, asset_path: str) -> Path:
    """The real path of ``asset_path`` inside ``asset_dir``, or :class:`AssetError`."""
    try:
        return resolve_input(asset_dir, asset_path, field="asset_path", place="asset directory")
    except SandboxError as exc:
        raise AssetError(str(exc)) from exc


def load_rgba(path: Path) -> np.ndarray:
    """Decode an image file to straight-alpha RGBA, (h, w, 4) uint8, rows top to bottom."""
    try:
        with Image.open(path) as image:
            if image.width * image.height > MAX_IMAGE_PIXELS:
                raise AssetError(f"{path.name}: {image.width}x{image.height} is larger than 7680x4320")
            rgba = image.convert("RGBA")
            return np.asarray(rgba, dtype=np.uint8).copy()
    except AssetError:
        raise
    except (OSError, Image.DecompressionBombError, ValueError) as exc:
        raise AssetError(f"{path.name}: cannot decode image: {exc}") from exc


def premultiply(rgba: np.ndarray) -> np.ndarray:
    """Straight -> premultiplied alpha, rounded to nearest (what the GL blend expects)."""
    alpha = rgba[..., 3:4].astype(np.uint32)
    out = rgba.copy()
    out[..., :3] = ((rgba[..., :3].astype(np.uint32) * alpha + 127) // 255).astype(np.uint8)
    return out


@lru_cache(maxsize=64)
def _load_cached(path: Path, mtime_ns: int, size: int) -> np.ndarray:
    # mtime_ns and size are unused in the body on purpose: they are part of the cache key,
    # so a file rewritten in place is decoded again.
    array = premultiply(load_rgba(path))
    array.setflags(write=False)
    return array


def load_overlay(asset_dir: str | os.PathLike[str] | None, asset_path: str) -> np.ndarray:
    """Premultiplied RGBA of an overlay asset; decoded again only when the file changes."""
    real = resolve_asset(asset_dir, asset_path)
    info = real.stat()
    return _load_cached(real, info.st_mtime_ns, info.st_size)


def image_size(asset_dir: str | os.PathLike[str] | None, asset_path: str) -> tuple[int, int]:
    """(width, height) of an overlay asset (decodes it once; the renderer reuses the decode)."""
    pixels = load_overlay(asset_dir, asset_path)
    return (pixels.shape[1], pixels.shape[0])
