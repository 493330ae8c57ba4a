"""``as_pixel_format``: a pixel format that arrives as a plain string, checked into the renderer's type."""

from __future__ import annotations

import pytest

from compositord.daemon.engine.render.frames import PIXEL_FORMATS, as_pixel_format


@pytest.mark.parametrize("name", PIXEL_FORMATS)
def test_every_pixel_format_is_itself(name: str) -> None:
    assert as_pixel_format(name) == name


@pytest.mark.parametrize("name", ["", "RGBA8", "yuv420p", "nv12 "])
def test_anything_else_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown pixel format"):
        as_pixel_format(name)
