"""Image overlays and image sources: files from the asset directory, nothing else.

``resolve_asset`` is the one gate between a client-supplied ``asset_path`` and
the file system. It refuses, with an :class:`AssetError` that names the path
and the reason:

- absolute paths and any ``..`` component (the client names a file *inside*
  the asset directory, never a way out of it);
- symbolic links whose target leaves the asset directory (the resolved real
  path must stay under the real asset directory);
- anything that is not a regular file (devices, FIFOs, sockets, directories),
  and anything under /proc, /sys or /dev even when linked from inside.
"""

from __future__ import annotations

import os
import stat
from functools import lru_cache
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

_FORBIDDEN_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
MAX_IMAGE_PIXELS = 7680 * 4320


class AssetError(ValueError):
    """A client-named asset cannot be used; the message says which and why."""


def resolve_asset(asset_dir: str | os.PathLike[str] | None, asset_path: str) -> Path:
    """The real path of ``asset_path`` inside ``asset_dir``, or :class:`AssetError`."""
    if asset_dir is None:
        raise AssetError(f"asset_path {asset_path!r}: no asset directory is configured")
    if not isinstance(asset_path, str) or not asset_path:
        raise AssetError(f"asset_path {asset_path!r}: must be a non-empty relative path")
    if "\x00" in asset_path or "\\" in asset_path:
        raise AssetError(f"asset_path {asset_path!r}: NUL and backslash are not allowed")
    relative = PurePosixPath(asset_path)
    if relative.is_absolute():
        raise AssetError(f"asset_path {asset_path!r}: absolute paths are refused; name a file inside the asset directory")
    if ".." in relative.parts:
        raise AssetError(f"asset_path {asset_path!r}: '..' is refused; name a file inside the asset directory")
    root = Path(asset_dir).resolve(strict=False)
    candidate = root.joinpath(*relative.parts)
    try:
        real = candidate.resolve(strict=True)
    except (FileNotFoundError, RuntimeError) as exc:
        raise AssetError(f"asset_path {asset_path!r}: no such file in the asset directory") from exc
    if not real.is_relative_to(root):
        raise AssetError(f"asset_path {asset_path!r}: a link leads out of the asset directory")
    if any(real.is_relative_to(forbidden) for forbidden in _FORBIDDEN_ROOTS):
        raise AssetError(f"asset_path {asset_path!r}: device and kernel files are refused")
    mode = real.stat().st_mode
    if not stat.S_ISREG(mode):
        raise AssetError(f"asset_path {asset_path!r}: not a regular file")
    return real


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
