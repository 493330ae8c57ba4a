"""daemon/sources: test patterns and image sources as SourceFrames."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from compositord.daemon.engine.render.frames import SourceFrame, frame_byte_size
from compositord.daemon.engine.render.images import AssetError
from compositord.daemon.engine.sources.colorbars import ColorbarsSource, ramp, smpte_bars
from compositord.daemon.engine.sources.image import ImageSource


def test_smpte_bars_have_seven_75_percent_bars_on_top() -> None:
    bars = smpte_bars(700, 480)
    assert bars.shape == (480, 700, 4) and (bars[..., 3] == 255).all()
    tops = [tuple(bars[10, 50 + 100 * i, :3]) for i in range(7)]
    assert tops == [(191, 191, 191), (191, 191, 0), (0, 191, 191), (0, 191, 0), (191, 0, 191), (191, 0, 0), (0, 0, 191)]
    assert tuple(bars[479, 187, :3]) == (255, 255, 255)  # the white block of the bottom row (125..250)


def test_ramp_runs_black_to_white() -> None:
    image = ramp(256, 2)
    assert image[0, 0, 0] == 0 and image[0, -1, 0] == 255
    assert (np.diff(image[0, :, 0].astype(int)) >= 0).all()


def test_colorbars_frame_keeps_its_serial_until_params_change() -> None:
    source = ColorbarsSource({"width": 64, "height": 32, "pattern": "smpte"})
    first = source.frame(0.0)
    assert first is source.frame(1.0)
    assert first.opaque and (first.width, first.height, first.pixel_format) == (64, 32, "rgba8")
    source.configure({"width": 64, "height": 32, "pattern": "smpte"})
    assert source.frame().serial == first.serial
    source.configure({"width": 64, "height": 32, "pattern": "solid", "color": "#FF000080"})
    changed = source.frame()
    assert changed.serial != first.serial and not changed.opaque
    assert tuple(np.asarray(changed.data)[0, 0]) == (255, 0, 0, 128)


def test_unknown_pattern_is_refused() -> None:
    with pytest.raises(ValueError, match="pattern"):
        ColorbarsSource({"pattern": "zebra"})


def test_image_source_decodes_and_reloads_on_change(tmp_path: Path) -> None:
    Image.fromarray(np.full((3, 5, 3), 9, dtype=np.uint8)).save(tmp_path / "a.png")
    source = ImageSource({"asset_path": "a.png"}, tmp_path)
    first = source.frame()
    assert (first.width, first.height) == (5, 3) and first.opaque
    source.refresh()
    assert source.frame() is first
    Image.fromarray(np.full((4, 4, 4), 9, dtype=np.uint8)).save(tmp_path / "a.png")
    import os

    os.utime(tmp_path / "a.png", ns=(1, 1))
    source.refresh()
    assert source.frame().serial != first.serial and source.frame().width == 4


def test_image_source_uses_the_asset_sandbox(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match=re.escape("'..'")):
        ImageSource({"asset_path": "../x.png"}, tmp_path)


def test_source_frame_checks_its_byte_count() -> None:
    assert frame_byte_size("nv12", 4, 2) == 12 and frame_byte_size("i420", 5, 3) == 15 + 2 * 3 * 2
    with pytest.raises(ValueError, match="needs 12"):
        SourceFrame("nv12", 4, 2, b"\0" * 11, 1)
    with pytest.raises(ValueError, match="pixel_format"):
        SourceFrame("bgra", 4, 2, b"\0" * 32, 1)  # type: ignore[arg-type]  # a wrong type on purpose: the check under test


def test_animated_bars_move_and_get_a_new_serial_per_time() -> None:
    source = ColorbarsSource({"width": 160, "height": 90, "pattern": "ramp", "animated": True})
    early, late = source.frame(0.5), source.frame(1.5)
    assert early.serial != late.serial
    assert source.frame(1.5) is late  # same time, same frame: no upload

    def bar_columns(frame: SourceFrame) -> set[int]:
        pixels = np.asarray(frame.data)
        return set(np.flatnonzero((pixels[45, :, :3] == 255).all(axis=-1)).tolist()) - {159}

    assert bar_columns(early) and bar_columns(late) and min(bar_columns(late)) > max(bar_columns(early))


def test_timestamp_is_burned_in_top_left() -> None:
    source = ColorbarsSource({"width": 320, "height": 180, "pattern": "solid", "color": "#0000FFFF", "timestamp": True})
    first, second = source.frame(1.0), source.frame(62.25)
    corner = np.asarray(second.data)[:16, :100, :3].astype(int)
    assert ((corner.min(axis=-1) > 200).sum()) >= 10, "light text in the corner"
    assert (corner.max(axis=-1) == 0).sum() >= 100, "on a black box"
    assert not np.array_equal(np.asarray(first.data)[:16, :100], np.asarray(second.data)[:16, :100])
    assert tuple(np.asarray(second.data)[170, 300, :3]) == (0, 0, 255)  # the rest is the pattern
