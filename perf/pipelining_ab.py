"""Same-run A/B of frame pipelining on llvmpipe (issue 12, item 6): the compositor_only scene, our renderer only.

An experiment, not a scenario of ``compositord bench``: each variant patches the renderer the way the idea
would change it, and they run interleaved in one process (``--frames`` frames each, ``--reps`` rounds), so
the machine's drift hits them alike. Figures and verdicts are in perf/README.md, "Pipelined frames".

    .venv/bin/python -m compositord.perf.pipelining_ab --frames 50 --reps 30 base,pipelined
    .venv/bin/python -m compositord.perf.pipelining_ab --check      # every variant's frames against base's
    .venv/bin/python -m compositord.perf.pipelining_ab --upload-times --frames 30 --reps 10 base,double_sources

Variants (``+1 frame``: frame N's pixels come out only after frame N+1's inputs went in):

- ``base``: ``Renderer.render``, what the daemon's render loop and the bench do.
- ``pbo_upload1`` / ``pbo_upload2``: every RGBA upload copied into one pixel-unpack buffer (or a pair, in
  turn) per texture, then ``glTexSubImage2D`` from it.
- ``double_sources``: two textures per source, each upload into the one the previous frame's draws did
  not read, so an upload never waits on a draw.
- ``pbo_readback_pair`` (+1 frame): frame N read into one of two pixel-pack buffers, frame N-1's mapped.
- ``pipelined`` (+1 frame): two renderers in turn (double-buffered targets and source textures): frame N
  uploaded, drawn and flushed, then frame N-1 read back.
- ``prefetch`` (+1 frame): after frame N's draws are flushed, frame N+1's sources are uploaded into the
  second texture of each pair, then frame N is read back and N+1 drawn; the bottom layer is drawn, not
  written into the target (frame N is still in it). ``no_direct`` is ``base`` drawn that way too.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render import renderer as renderer_module
from compositord.daemon.engine.render.frames import SourceFrame
from compositord.daemon.engine.render.scene import ResolvedScene, resolve_scene
from compositord.daemon.engine.render.source_textures import SourceTexture
from compositord.perf import sources
from compositord.perf.harness import compositor_params, gl_context
from compositord.perf.scenario_compositor_only import HEIGHT, WIDTH, scene_params
from compositord.protocol.scenes import scene_params as program_params

GL_PIXEL_UNPACK_BUFFER = 0x88EC
Run = Callable[[int, bool], list[bytes]]  # renders n frames; with keep, returns the frames that came out (else none)


def _inputs() -> Callable[[], tuple[ResolvedScene, dict[str, SourceFrame]]]:
    """The compositor_only scene and its four cycling sources, from the first frame of each cycle."""
    cycles = [sources.rgba_cycle(WIDTH, HEIGHT, pattern="smpte" if i % 2 == 0 else "ramp") for i in range(4)]
    makers = {f"in_{i}": sources.CyclingSource(cycle, "rgba8", WIDTH, HEIGHT).frame for i, cycle in enumerate(cycles)}
    params = compositor_params(scene_params())

    def next_inputs() -> tuple[ResolvedScene, dict[str, SourceFrame]]:
        frames = {pin: make() for pin, make in makers.items()}
        return resolve_scene(program_params(params, params["program_scene"]), frames), frames

    return next_inputs


class _PboUpload:
    """``raw_gl.upload_rgba`` through ``count`` pixel-unpack buffers per texture, used in turn."""

    def __init__(self, ctx: Any, count: int) -> None:
        self._ctx, self._count, self._turn = ctx, count, 0
        self._buffers: dict[int, list[Any]] = {}

    def __call__(self, texture: Any, data: Any) -> None:
        pixels = np.ascontiguousarray(data) if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
        ring = self._buffers.setdefault(texture.glo, [self._ctx.buffer(reserve=pixels.nbytes) for _ in range(self._count)])
        self._turn += 1
        buffer = ring[self._turn % self._count]
        buffer.write(pixels)
        gl = raw_gl._bind(texture)
        gl["glPixelStorei"](raw_gl.GL_UNPACK_ALIGNMENT, 1)
        gl["glBindBuffer"](GL_PIXEL_UNPACK_BUFFER, buffer.glo)
        width, height = texture.size
        gl["glTexSubImage2D"](raw_gl.GL_TEXTURE_2D, 0, 0, 0, width, height, raw_gl.GL_BGRA, raw_gl.GL_UNSIGNED_BYTE, None)
        gl["glBindBuffer"](GL_PIXEL_UNPACK_BUFFER, 0)


class _SourcePair:
    """Two SourceTextures in place of one: an upload goes into the one not drawn last; ``prefetch`` uploads
    the next frame's pixels ahead, and the renderer's ``update`` then only switches."""

    def __init__(self, ctx: Any, yuv_pass: Any) -> None:
        self._pair = [SourceTexture(ctx, yuv_pass), SourceTexture(ctx, yuv_pass)]
        self._current = 0
        self._pending: int | None = None

    def prefetch(self, frame: SourceFrame) -> None:
        self._pair[self._current ^ 1].update(frame)
        self._pending = frame.serial

    def needs_upload(self, frame: SourceFrame) -> bool:
        return self._pending != frame.serial and self._pair[self._current].needs_upload(frame)

    def update(self, frame: SourceFrame) -> bool:
        if self._pending == frame.serial:
            self._current ^= 1
            self._pending = None
            return False
        if not self._pair[self._current].needs_upload(frame):
            return False
        self._current ^= 1
        return self._pair[self._current].update(frame)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pair[self._current], name)

    def release(self) -> None:
        for texture in self._pair:
            texture.release()


def _renderer(ctx: Any, *, pairs: bool = False, direct: bool = True) -> Any:
    """A renderer of the scene with its first frame drawn (its sources made as _SourcePair with ``pairs``)."""
    renderer: Any = renderer_module.Renderer(ctx, WIDTH, HEIGHT, "rgba8", "bt709")
    if not direct:
        renderer._can_write_directly = lambda *_: False
    scene, frames = _inputs()()
    if pairs:
        renderer_module.SourceTexture = _SourcePair  # type: ignore[misc,assignment]
    try:
        _submit(renderer, scene, frames)
    finally:
        renderer_module.SourceTexture = SourceTexture  # type: ignore[misc]
    renderer._readback.read()
    return renderer


def _submit(renderer: Any, scene: ResolvedScene, frames: dict[str, SourceFrame]) -> None:
    """Upload and draw a frame, hand all of it to the rasterizer, read nothing back."""
    renderer.begin_frame()
    renderer.draw_program(scene, frames, read_back=False)
    renderer.end_frame(frames)
    raw_gl.flush()


def _plain(renderer: Any, upload: Callable[..., None] | None = None) -> Run:
    inputs = _inputs()

    def run(n: int, keep: bool = False) -> list[bytes]:
        out = []
        if upload is not None:
            raw_gl.upload_rgba = upload
        try:
            for _ in range(n):
                data = renderer.render(*inputs()).data
                if keep:
                    out.append(data)
        finally:
            raw_gl.upload_rgba = _UPLOAD
        return out

    return run


def _one_frame_behind(start: Callable[[int], None], finish: Callable[[int], bytes]) -> Run:
    """A +1 frame variant: ``start(index)`` uploads, draws and flushes frame ``index``; ``finish(index)`` then
    reads back the frame before it, so frame N comes out after frame N+1 went in."""
    state = {"frame": 0}

    def run(n: int, keep: bool = False) -> list[bytes]:
        out = []
        for _ in range(n):
            index = state["frame"]
            state["frame"] += 1
            start(index)
            if index > 0:
                data = finish(index - 1)
                if keep:
                    out.append(data)
        return out

    return run


def _pbo_readback_pair(ctx: Any) -> Run:
    renderer, inputs = _renderer(ctx), _inputs()
    buffers = [ctx.buffer(reserve=WIDTH * HEIGHT * 4) for _ in range(2)]

    def start(index: int) -> None:
        _submit(renderer, *inputs())
        raw_gl.read_rgba_into(renderer._targets.frame_fbo, WIDTH, HEIGHT, buffers[index % 2], 0)

    return _one_frame_behind(start, lambda index: buffers[index % 2].read())


def _pipelined(ctx: Any) -> Run:
    renderers, inputs = [_renderer(ctx), _renderer(ctx)], _inputs()
    return _one_frame_behind(
        lambda index: _submit(renderers[index % 2], *inputs()), lambda index: renderers[index % 2]._readback.read()
    )


def _prefetch(ctx: Any) -> Run:
    renderer, inputs = _renderer(ctx, pairs=True, direct=False), _inputs()
    state = {"started": False}

    def run(n: int, keep: bool = False) -> list[bytes]:
        out = []
        for _ in range(n):
            if not state["started"]:
                _submit(renderer, *inputs())
                state["started"] = True
            scene, frames = inputs()
            for pin, frame in frames.items():
                renderer._sources[pin].prefetch(frame)
            data = renderer._readback.read()
            if keep:
                out.append(data)
            _submit(renderer, scene, frames)
        return out

    return run


_UPLOAD = raw_gl.upload_rgba
VARIANTS: dict[str, Callable[[Any], Run]] = {
    "base": lambda ctx: _plain(_renderer(ctx)),
    "pbo_upload1": lambda ctx: _plain(_renderer(ctx), _PboUpload(ctx, 1)),
    "pbo_upload2": lambda ctx: _plain(_renderer(ctx), _PboUpload(ctx, 2)),
    "double_sources": lambda ctx: _plain(_renderer(ctx, pairs=True)),
    "pbo_readback_pair": _pbo_readback_pair,
    "pipelined": _pipelined,
    "prefetch": _prefetch,
    "no_direct": lambda ctx: _plain(_renderer(ctx, direct=False)),
}


def check(ctx: Any, frames: int = 12) -> None:
    """Every variant's frames, from a fresh start, byte for byte against base's (same inputs, same order):
    a pipelined variant's k-th frame out must be the k-th frame in."""
    reference = VARIANTS["base"](ctx)(frames, True)
    for name, make in VARIANTS.items():
        out = make(ctx)(frames, True)
        same = [a == b for a, b in zip(out, reference[: len(out)], strict=True)]
        print(f"{name:18s} {sum(same)}/{len(same)} frames identical to base's")
        if not all(same):
            raise SystemExit(f"{name}: frames differ from base's")


def _warmed(ctx: Any, names: list[str]) -> dict[str, Run]:
    """The named variants, each past its first ten frames (shaders compiled, buffers made)."""
    runs = {name: VARIANTS[name](ctx) for name in names}
    for run in runs.values():
        run(10, False)
    return runs


def upload_times(ctx: Any, names: list[str], frames: int, reps: int) -> None:
    """How long each of a frame's four RGBA uploads keeps the render thread (median and p90 ms, per variant)."""
    times: dict[tuple[str, int], list[float]] = {}
    turn: dict[str, Any] = {"name": "", "upload": 0}

    def timed(texture: Any, data: Any) -> None:
        started = time.perf_counter()
        _UPLOAD(texture, data)
        times.setdefault((turn["name"], turn["upload"] % 4), []).append((time.perf_counter() - started) * 1000.0)
        turn["upload"] += 1

    runs = _warmed(ctx, names)
    for _ in range(reps):
        for name, run in runs.items():
            turn["name"], turn["upload"] = name, 0
            raw_gl.upload_rgba = timed
            try:
                run(frames, False)
            finally:
                raw_gl.upload_rgba = _UPLOAD
    for (name, upload), values in sorted(times.items()):
        print(
            f"{name:18s} upload {upload}: median {statistics.median(values):.3f} ms, p90 {statistics.quantiles(values, n=10)[-1]:.3f} ms"
        )


def measure(ctx: Any, names: list[str], frames: int, reps: int) -> None:
    runs = _warmed(ctx, names)
    fps: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(reps):
        for name, run in runs.items():
            wall, used = time.perf_counter(), time.process_time()
            run(frames, False)
            fps[name].append(frames / (time.perf_counter() - wall))
            cpu[name].append((time.process_time() - used) / frames * 1000.0)
    for name in names:
        line = (
            f"{name:18s} fps median {statistics.median(fps[name]):6.1f}  cpu ms/frame median {statistics.median(cpu[name]):5.2f}"
        )
        if name != names[0]:
            ratios = [a / b for a, b in zip(fps[name], fps[names[0]], strict=True)]
            quartiles = statistics.quantiles(ratios, n=4)
            line += (
                f"  ratio to {names[0]} median {statistics.median(ratios):.3f}"
                f" (quartiles {quartiles[0]:.2f}..{quartiles[2]:.2f}, ahead in {sum(r > 1 for r in ratios)}/{len(ratios)})"
            )
        print(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "variants", nargs="?", default="base,pipelined", help=f"comma-separated, first is the reference: {', '.join(VARIANTS)}"
    )
    parser.add_argument("--frames", type=int, default=50)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--check", action="store_true", help="compare every variant's frames with base's, measure nothing")
    parser.add_argument("--upload-times", action="store_true", help="time each upload of a frame instead of whole frames")
    args = parser.parse_args()
    with gl_context() as ctx:
        if args.check:
            check(ctx)
        elif args.upload_times:
            upload_times(ctx, args.variants.split(","), args.frames, args.reps)
        else:
            measure(ctx, args.variants.split(","), args.frames, args.reps)


if __name__ == "__main__":
    main()
