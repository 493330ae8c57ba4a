"""Keep the garbage collector's full passes short in the daemon's long-running processes.

CPython's oldest-generation collection walks every object the collector tracks. In an engine
process that is every function, class and constant of NumPy, PyAV, Pillow, moderngl and the
daemon: about 40 ms a pass on a 2-core llvmpipe machine, during which the render thread holds
no frame clock (two frames missed at 60 fps, and every edit in flight waits). Those objects live
as long as the process, so they are moved out of the collector's reach once, right after the
imports (``gc.freeze``); a full pass then walks only what the process made since. Only
start-up objects are frozen: a frozen object that later becomes part of an unreachable cycle is
never freed, so nothing per-session or per-frame may exist yet when this runs.
"""

from __future__ import annotations

import gc


def freeze_startup_objects() -> None:
    """Collect what start-up left behind, then exempt everything still alive from later collections."""
    gc.collect()
    gc.freeze()
