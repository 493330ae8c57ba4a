"""Per-frame breakdown of our compositing, from the standard library's deterministic profiler.

cProfile times every call into moderngl's C extension, so the frame splits
into uploads (``Texture.write``), draw submission (``VertexArray.render``,
``Framebuffer.clear``), readback (``Framebuffer.read``) and Python.
llvmpipe queues draws and rasterizes when the result is needed, so the
readback figure holds the fragment work of the frame plus the copy.
(pyinstrument, when installed, gives a sampled call tree of the same run:
``--profile`` prints it too.)
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from typing import Any

CATEGORIES = {
    "write": "upload (Texture.write)",
    "read": "readback + rasterization (Framebuffer.read)",
    "read_into": "readback + rasterization (Framebuffer.read)",
    "render": "draw submission (VertexArray.render)",
    "clear": "draw submission (VertexArray.render)",
}
# The renderer's own GL calls through ctypes (daemon/engine/render/raw_gl.py) are not builtins to cProfile:
# their time is their Python wrapper's, counted under the wrapper's name.
RAW_GL = {
    "upload_rgba": "upload (raw_gl.upload_rgba)",
    "read_rgba": "readback + rasterization (raw_gl.read_rgba)",
    "read_rgba_into": "readback + rasterization (raw_gl.read_rgba)",
    "flush": "flush (rasterization handed to llvmpipe's threads)",
}


def breakdown(run_: Any, *, frames: int, say: Callable[..., None]) -> dict[str, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(frames):
        run_.frame()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = 0.0
    buckets: dict[str, float] = {}
    # pstats.Stats.stats is the profile's table, documented by pstats but not declared in typeshed.
    for (filename, _line, function), (_cc, _nc, tottime, _cumtime, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        total += tottime
        label = "python (scene resolution, renderer bookkeeping, sources)"
        if filename.endswith("raw_gl.py") and function in RAW_GL:
            label = RAW_GL[function]
        elif filename == "~":  # a builtin: moderngl's C methods show as "<method 'write' of 'moderngl...' objects>"
            name = function.split("'")[1] if "'" in function else function
            if "moderngl" in function or "mgl" in function:
                label = CATEGORIES.get(name, f"other GL calls ({name})")
            else:
                label = "python builtins and numpy"
        buckets[label] = buckets.get(label, 0.0) + tottime
    rows = {label: round(1000.0 * seconds / frames, 3) for label, seconds in sorted(buckets.items(), key=lambda kv: -kv[1])}
    say(f"per-frame breakdown (cProfile, {frames} frames, ms/frame; profiler overhead included):")
    for label, ms in rows.items():
        say(f"  {ms:8.3f}  {label}")
    say(f"  {1000.0 * total / frames:8.3f}  total")
    _pyinstrument(run_, frames, say)
    return {"frames": frames, "ms_per_frame": rows, "total_ms_per_frame": round(1000.0 * total / frames, 3)}


def _pyinstrument(run_: Any, frames: int, say: Callable[..., None]) -> None:
    try:
        from pyinstrument import Profiler  # type: ignore[import-not-found, unused-ignore]  # optional: installed by hand (perf/README.md)
    except ImportError:
        return
    profiler = Profiler(interval=0.0005)
    profiler.start()
    for _ in range(frames):
        run_.frame()
    profiler.stop()
    say(profiler.output_text(unicode=False, color=False, show_all=False))
