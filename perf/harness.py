"""Our side of the compositing benchmarks: the daemon's own scene resolution and renderer, in this thread.

Each frame does what the render loop does for a compositor node: take every
source's current frame, ``resolve_scene``, ``Renderer.render`` (uploads,
draws, reads the output back to host memory).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from compositord.daemon.engine.render.frames import OutputFrame, SourceFrame
from compositord.protocol import params as params_schema
from compositord.protocol.params import COMPOSITOR_KIND


def compositor_params(durable: Mapping[str, Any]) -> dict[str, Any]:
    """Validated (a bench scene is refused the same way a client's would be) and with defaults."""
    return params_schema.with_defaults(COMPOSITOR_KIND, params_schema.validate(COMPOSITOR_KIND, dict(durable)))


def set_llvmpipe_threads(threads: int | None) -> None:
    """LP_NUM_THREADS must be set before the first GL context of the process is made."""
    if threads is not None:
        os.environ["LP_NUM_THREADS"] = str(threads)


class CompositorRun:
    """A renderer for one compositor's params and a set of sources; ``frame()`` renders one output frame."""

    def __init__(self, ctx: Any, full_params: dict[str, Any], sources: Mapping[str, Callable[[], SourceFrame]]) -> None:
        from compositord.daemon.engine.render.renderer import Renderer

        self._params = full_params
        self._sources = dict(sources)
        self.renderer = Renderer(
            ctx, full_params["width"], full_params["height"], full_params["output_format"], full_params["color_matrix"]
        )

    def frame(self) -> OutputFrame:
        from compositord.daemon.engine.render.scene import resolve_scene
        from compositord.protocol.scenes import scene_params

        frames = {pin: make() for pin, make in self._sources.items()}
        scene = resolve_scene(scene_params(self._params, self._params["program_scene"]), frames)
        return self.renderer.render(scene, frames)

    def release(self) -> None:
        self.renderer.release()


@contextmanager
def gl_context() -> Iterator[Any]:
    from compositord.daemon.engine.render.gl_context import create_context

    ctx = create_context()
    try:
        yield ctx
    finally:
        ctx.release()
