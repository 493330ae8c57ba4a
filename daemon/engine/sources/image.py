"""A ``video::image`` node: a PNG / JPEG from the asset directory as an RGBA SourceFrame.

The path goes through the same sandbox as image overlays
(``render.images.resolve_asset``); the file is decoded again only when it
changes on disk (checked when ``configure`` or ``refresh`` is called).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping
from typing import Any

from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.render.images import load_rgba, resolve_asset

_serials = itertools.count(1)


class ImageSource:
    def __init__(self, params: Mapping[str, Any], asset_dir: str | os.PathLike[str] | None) -> None:
        self._asset_dir = asset_dir
        self._identity: tuple[str, int, int] | None = None
        self._frame: SourceFrame | None = None
        self.configure(params)

    def configure(self, params: Mapping[str, Any]) -> None:
        if "asset_path" not in params:
            raise ValueError("asset_path: required for video::image")
        self._asset_path = str(params["asset_path"])
        self.refresh()

    def refresh(self) -> None:
        """Decode again if the file changed since the last decode (else keep the frame and its serial)."""
        real = resolve_asset(self._asset_dir, self._asset_path)
        info = real.stat()
        identity = (str(real), info.st_mtime_ns, info.st_size)
        if identity == self._identity and self._frame is not None:
            return
        pixels = load_rgba(real)
        height, width = pixels.shape[:2]
        self._frame = SourceFrame("rgba8", width, height, pixels, next(_serials), opaque=bool((pixels[..., 3] == 255).all()))
        self._identity = identity

    def frame(self, t: float = 0.0) -> SourceFrame:
        assert self._frame is not None
        return self._frame
