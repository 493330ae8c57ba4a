"""video::colorbars in a running render loop: with `animated` the bar moves and with `timestamp` the burnt-in
time changes from frame to frame of the compositor's output (not only in the source's own frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import trio

from compositord.daemon.engine.loop import RenderLoop
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.tests.engine_recorder import EventRecorder

pytestmark = pytest.mark.gl

W, H = 160, 90


async def test_animation_and_timestamp_change_the_output(tmp_path: Path) -> None:
    session = SessionRecord(
        "s1",
        "bars",
        {
            "bars": NodeRecord(
                "bars",
                "video::colorbars",
                {"width": W, "height": H, "pattern": "solid", "color": "#202020", "animated": True, "timestamp": True},
            ),
            "comp": NodeRecord(
                "comp",
                "video::compositor",
                {"width": W, "height": H, "fps": 30, "layers": {"in_0": {"rect": {"x": 0, "y": 0, "width": W, "height": H}}}},
            ),
        },
        [ConnectionRecord("bars", "out", "comp", "in_0")],
    )
    loop = RenderLoop(session, EventRecorder(), trio_token=trio.lowlevel.current_trio_token(), asset_dir=tmp_path)
    loop.start()
    try:
        await loop.wait_first_frame()
        first = loop.latest_output("comp")
        assert first is not None
        with trio.fail_after(5):
            while (later := loop.latest_output("comp")) is None or later.frame_number < first.frame_number + 6:
                await trio.sleep(0.01)
        before, after = first.as_array()[..., :3].astype(int), later.as_array()[..., :3].astype(int)

        def bar_columns(image: np.ndarray) -> set[int]:
            row = image[H * 3 // 4]  # below the timestamp box
            return set(np.flatnonzero((row > 240).all(axis=-1)).tolist())

        assert bar_columns(before) and bar_columns(after) and bar_columns(before) != bar_columns(after), "the bar moved"
        corner = (slice(0, 8), slice(0, 60))
        # Light text on the black box; small antialiased glyphs peak at about 200 of 255, so 100 tells text from box.
        assert (before[corner] > 100).any() and (after[corner] > 100).any(), (
            f"text in the corner: frames {first.frame_number}, {later.frame_number}; max {before[corner].max()}, {after[corner].max()}; mean {before.mean():.1f}"
        )
        assert not np.array_equal(before[corner], after[corner]), "the burnt-in time changed"
    finally:
        await trio.to_thread.run_sync(loop.stop, 5.0)
