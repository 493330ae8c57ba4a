"""10,000 frames at 64x64 while layers, overlays, inputs, formats and sizes come and go:
live GL objects and RSS stay flat, and release() frees everything.

GL objects are counted independently of the renderer's bookkeeping: every
moderngl object alive in the Python heap that has not been released. RSS is
compared after a warm-up (caches, Mesa's shader cache and allocator pools
filled) with the end, within ``RSS_GROWTH_LIMIT``.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path

import moderngl
import numpy as np
import pytest

from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.render.renderer import Renderer
from compositord.daemon.engine.render.scene import resolve_scene
from compositord.protocol import params as protocol_params
from compositord.tests.render_reference import gradient

pytestmark = [pytest.mark.gl, pytest.mark.slow]

FRAMES = 10_000
WARM_UP = 2_000
CHECK_EVERY = 1_000  # a multiple of the variant cycle, so every check sees the same phase
RSS_GROWTH_LIMIT = 4 * 1024 * 1024  # bytes, after warm-up

_GL_TYPES = (
    moderngl.Buffer,
    moderngl.Texture,
    moderngl.Framebuffer,
    moderngl.Program,
    moderngl.VertexArray,
    moderngl.Sampler,
    moderngl.Renderbuffer,
    moderngl.Query,
)


def live_gl_objects() -> int:
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, _GL_TYPES) and type(getattr(obj, "mglo", None)).__name__ != "InvalidObject"
    )


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def variants() -> list[dict]:
    """Ten scenes that add and remove layers and overlays, change the output format and the canvas."""
    base = {"width": 64, "height": 64, "num_inputs": 3}

    def text(i: int, s: str) -> dict[str, object]:
        return {"id": f"t{i}", "text": s, "font_size": 12, "rect": {"x": 2, "y": 2 + 10 * i, "width": 60, "height": 12}}

    return [
        {**base},
        {**base, "layers": {"in_1": {"rect": {"x": 4, "y": 4, "width": 30, "height": 30}, "rotation_degrees": 20}}},
        {**base, "text_overlays": [text(0, "one")]},
        {**base, "text_overlays": [text(0, "one"), text(1, "two")], "output_format": "nv12"},
        {**base, "layers": {"in_2": {"crop_shape": "circle", "opacity": 0.5}}, "output_format": "i420"},
        {**base, "text_overlays": [text(1, "three")], "layers": {"in_0": {"visible": False}}},
        {**base, "width": 48, "height": 32},
        {
            **base,
            "image_overlays": [{"id": "i0", "asset_path": "dot.png", "rect": {"x": 10, "y": 10, "width": 20, "height": 20}}],
        },
        {**base, "layers": {"in_1": {"mirror_horizontal": True}}},
        {**base, "image_overlays": [], "text_overlays": []},
    ]


def test_gl_objects_and_rss_stay_flat(gl_ctx: moderngl.Context, tmp_path: Path) -> None:
    from PIL import Image

    Image.fromarray(gradient(8, 8, alpha=180)).save(tmp_path / "dot.png")
    scenes_params = [
        protocol_params.with_defaults("video::compositor", protocol_params.validate("video::compositor", v)) for v in variants()
    ]
    bars = SourceFrame("rgba8", 64, 64, gradient(64, 64), 1, opaque=True)
    small = gradient(16, 16)
    luma = np.full(32 * 32, 120, dtype=np.uint8)
    chroma = np.full(16 * 16 * 2, 128, dtype=np.uint8)
    nv12 = SourceFrame("nv12", 32, 32, np.concatenate([luma, chroma]), 1)

    baseline = live_gl_objects()
    renderer = Renderer(gl_ctx, 64, 64, asset_dir=tmp_path)
    counts: list[int] = []
    rss_after_warm_up = 0
    try:
        for number in range(FRAMES):
            params = scenes_params[(number // 10) % len(scenes_params)]
            frames = {"in_0": bars, "in_1": SourceFrame("rgba8", 16, 16, small, number, opaque=True)}  # new pixels every frame
            if (number // 50) % 2:
                frames["in_2"] = nv12  # an input that comes and goes
            scene = resolve_scene(params, frames, asset_dir=tmp_path)
            renderer.render(scene, frames)
            if (number + 1) % CHECK_EVERY == 0:
                counts.append(live_gl_objects())
            if number + 1 == WARM_UP:
                rss_after_warm_up = rss_bytes()
        rss_at_end = rss_bytes()
        assert renderer.stats.frames == FRAMES
        assert renderer.stats.leaked_objects_collected == 0, "GL objects were dropped without release()"
        assert len(set(counts)) == 1, f"live GL objects changed between checks: {counts}"
        growth = rss_at_end - rss_after_warm_up
        assert growth <= RSS_GROWTH_LIMIT, f"RSS grew by {growth / 2**20:.1f} MiB after warm-up"
    finally:
        renderer.release()
    assert live_gl_objects() == baseline, "release() left GL objects alive"
