"""The GL executor: draws a ResolvedScene with the current source frames and reads the result back.

Used only on the render thread (the thread that called ``create_context``)::

    ctx = create_context(device_index)
    renderer = Renderer(ctx, 1280, 720, "nv12", "bt709", asset_dir)
    scene = resolve_scene(params_with_defaults, frames)   # frames: pin -> SourceFrame
    output = renderer.render(scene, frames)                # OutputFrame
    ...
    renderer.release(); ctx.release()

Per frame: the bottom layer is written straight into the render target when
it is an opaque RGBA frame of exactly the canvas size drawn unscaled,
unrotated and unmirrored (no clear, no draw); otherwise the target is
cleared to the background. Each layer is then drawn in scene order with
premultiplied-alpha blending (blending off for opaque layers). YUV output
is converted by a shader pass; the planes are read back (``readback``).
RGBA textures and the target have BGRA-ordered storage (``raw_gl`` says why).

Sources are uploaded only when their ``serial`` changes; text rasters and
image overlays are made once per distinct content and kept while a scene
uses them. Whatever a frame no longer uses is released at the end of it.
The canvas size, output format and colour matrix follow the scene: when
they change, the targets are made again (the constructor's values are only
the first allocation).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass

import moderngl

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render.frames import COLOR_MATRICES, OutputFrame, SourceFrame
from compositord.daemon.engine.render.gl_context import collect_garbage
from compositord.daemon.engine.render.images import AssetError, load_overlay
from compositord.daemon.engine.render.layer_pass import LayerPass, is_screen_aligned
from compositord.daemon.engine.render.output_pass import OutputTargets
from compositord.daemon.engine.render.plane_pass import PlaneSource, draw_planes, planes_apply
from compositord.daemon.engine.render.readback import Readback, ReadbackMode
from compositord.daemon.engine.render.scene import ResolvedLayer, ResolvedScene
from compositord.daemon.engine.render.source_textures import SourceTexture, StaticTexture, as_buffer
from compositord.daemon.engine.render.text import TextStyle, rasterize_text
from compositord.daemon.engine.render.yuv_input_pass import YuvInputPass

DEFAULT_READBACK: ReadbackMode = "direct"  # measured: docs/RENDERING.md


@dataclass
class RenderStats:
    frames: int = 0
    source_uploads: int = 0
    direct_writes: int = 0
    plane_frames: int = 0  # NV12 frames composited plane by plane (render/plane_pass.py)
    text_rasterizations: int = 0
    image_uploads: int = 0
    last_render_ms: float = 0.0
    leaked_objects_collected: int = 0  # dropped without release(): a bug to fix if it grows


class Renderer:
    def __init__(
        self,
        ctx: moderngl.Context,
        width: int,
        height: int,
        output_format: str = "rgba8",
        color_matrix: str = "bt709",
        asset_dir: str | os.PathLike[str] | None = None,
        *,
        readback: ReadbackMode = DEFAULT_READBACK,
    ) -> None:
        if color_matrix not in COLOR_MATRICES:
            raise ValueError(f"color_matrix {color_matrix!r}: expected one of {', '.join(COLOR_MATRICES)}")
        self._ctx = ctx
        self._color_matrix = color_matrix
        self._asset_dir = asset_dir
        self._readback_mode: ReadbackMode = readback
        # moderngl re-binds "the bound framebuffer" after making a new one; if that one was
        # released since, GL says INVALID_OPERATION. So each frame ends bound to framebuffer 0.
        self._no_target: moderngl.Framebuffer | None = ctx.detect_framebuffer(0)
        self._layer_pass: LayerPass | None = LayerPass(ctx)
        self._yuv_pass: YuvInputPass | None = YuvInputPass(ctx)
        self._targets: OutputTargets | None = None
        self._readback: Readback | None = None
        self._sources: dict[str, SourceTexture] = {}
        self._plane_sources: dict[str, PlaneSource] = {}
        self._texts: dict[TextStyle, StaticTexture] = {}
        self._images: dict[str, tuple[object, StaticTexture]] = {}  # path -> (decoded pixels, texture)
        self.stats = RenderStats()
        self.overlay_errors: dict[str, str] = {}  # overlay id -> why it was not drawn (last frame)
        self._allocate(width, height, output_format)

    # -- targets ---------------------------------------------------------

    def _allocate(self, width: int, height: int, output_format: str) -> None:
        self._release_targets()
        self._targets = OutputTargets(self._ctx, width, height, output_format, self._color_matrix)
        self._readback = Readback(self._ctx, self._targets.planes, self._readback_mode)

    def _release_targets(self) -> None:
        if self._readback is not None:
            self._readback.release()
            self._readback = None
        if self._targets is not None:
            self._targets.release()
            self._targets = None

    # -- per frame -------------------------------------------------------

    def render(self, scene: ResolvedScene, frames: Mapping[str, SourceFrame]) -> OutputFrame:
        if self._layer_pass is None:
            raise RuntimeError("Renderer.render after release()")
        started = time.perf_counter()
        targets = self._targets
        assert targets is not None
        wanted = (scene.width, scene.height, scene.output_format, scene.color_matrix)
        if (targets.width, targets.height, targets.output_format, targets.color_matrix) != wanted:
            self._color_matrix = scene.color_matrix
            self._allocate(scene.width, scene.height, scene.output_format)
            targets = self._targets
            assert targets is not None
        canvas = (scene.width, scene.height)
        used_texts: set[TextStyle] = set()
        used_images: set[str] = set()
        self.overlay_errors = {}

        if planes_apply(scene, frames) and targets.luma_target is not None and targets.chroma_target is not None:
            uploads, direct = draw_planes(
                self._ctx, self._layer_pass, scene, frames, self._plane_sources, targets.luma_target, targets.chroma_target
            )
            self.stats.source_uploads += uploads
            self.stats.direct_writes += int(direct)
            self.stats.plane_frames += 1
            return self._finish(targets, frames, used_texts, used_images, started)

        layers = list(scene.layers)
        if layers and self._can_write_directly(layers[0], frames, canvas):
            raw_gl.upload_rgba(targets.frame, as_buffer(frames[layers[0].id].data))
            self.stats.direct_writes += 1
            layers = layers[1:]
            targets.frame_fbo.use()
        else:
            targets.frame_fbo.use()
            r, g, b, a = scene.background
            targets.frame_fbo.clear(*raw_gl.stored_color(r * a, g * a, b * a, a))

        # Flushes cut the frame into several llvmpipe scenes (each rasterized by its threads while
        # this one goes on); measured in docs/RENDERING.md "Speed on llvmpipe".
        unflushed = False  # layers drawn since the last flush
        previous_aligned = False
        for layer in layers:
            if layer.opacity <= 0.0 or layer.rect.width <= 0 or layer.rect.height <= 0:
                continue
            if unflushed and self._will_upload(layer, frames):
                # The layers so far rasterize on llvmpipe's threads while this thread copies the next source in.
                raw_gl.flush()
                unflushed = False
            drawable = self._texture_for(layer, frames, used_texts, used_images)
            if drawable is None:
                continue
            texture, premultiply, opaque = drawable
            aligned = is_screen_aligned(layer)
            if unflushed and aligned != previous_aligned:
                # llvmpipe rasterizes a 64x64 tile with its fast linear path only when every primitive
                # binned to it is a screen-aligned rectangle: a rotated layer sharing a scene with
                # rectangles would send the rectangles' tiles down the general path too.
                raw_gl.flush()
            previous_aligned = aligned
            targets.frame_fbo.use()
            self._layer_pass.draw(texture, layer, canvas, premultiply=premultiply, opaque_source=opaque)
            unflushed = True

        targets.convert()
        return self._finish(targets, frames, used_texts, used_images, started)

    def _finish(
        self,
        targets: OutputTargets,
        frames: Mapping[str, SourceFrame],
        used_texts: set[TextStyle],
        used_images: set[str],
        started: float,
    ) -> OutputFrame:
        """Read the output back, then release what this frame did not use."""
        assert self._readback is not None
        data = self._readback.read()
        assert self._no_target is not None
        self._no_target.use()
        self._drop_unused(frames, used_texts, used_images)
        self.stats.leaked_objects_collected += collect_garbage(self._ctx)
        self.stats.frames += 1
        self.stats.last_render_ms = (time.perf_counter() - started) * 1000.0
        return OutputFrame(
            pixel_format=targets.output_format,  # type: ignore[arg-type]
            width=targets.width,
            height=targets.height,
            data=data,
            color_matrix=self._color_matrix,  # type: ignore[arg-type]
            frame_number=self.stats.frames,
        )

    @staticmethod
    def _can_write_directly(layer: ResolvedLayer, frames: Mapping[str, SourceFrame], canvas: tuple[int, int]) -> bool:
        """Opaque RGBA, exactly canvas-sized, drawn 1:1: its pixels *are* the frame's bottom."""
        if layer.kind != "video" or layer.id not in frames:
            return False
        frame = frames[layer.id]
        return (
            frame.pixel_format == "rgba8" and frame.opaque and layer.covers_canvas_unscaled((frame.width, frame.height), canvas)
        )

    def _will_upload(self, layer: ResolvedLayer, frames: Mapping[str, SourceFrame]) -> bool:
        """Whether drawing ``layer`` starts with copying a new source frame in."""
        frame = frames.get(layer.id) if layer.kind == "video" else None
        if frame is None:
            return False
        source = self._sources.get(layer.id)
        return source is None or source.needs_upload(frame)

    def _texture_for(
        self,
        layer: ResolvedLayer,
        frames: Mapping[str, SourceFrame],
        used_texts: set[TextStyle],
        used_images: set[str],
    ) -> tuple[moderngl.Texture, bool, bool] | None:
        """(texture, premultiply in shader, opaque) for the layer, uploading what changed."""
        if layer.kind == "video":
            frame = frames.get(layer.id)
            if frame is None:
                return None
            source = self._sources.get(layer.id)
            if source is None:
                assert self._yuv_pass is not None
                source = self._sources[layer.id] = SourceTexture(self._ctx, self._yuv_pass)
            if source.update(frame):
                self.stats.source_uploads += 1
            assert source.rgba is not None
            # An opaque source is its own premultiplied form: the branch-free program applies.
            return source.rgba, not (source.premultiplied or source.opaque), source.opaque
        if layer.kind == "text":
            assert layer.text_style is not None
            style = layer.text_style
            used_texts.add(style)
            text = self._texts.get(style)
            if text is None:
                text = self._texts[style] = StaticTexture(self._ctx, rasterize_text(style))
                self.stats.text_rasterizations += 1
            return text.texture, False, text.opaque
        assert layer.asset_path is not None
        try:
            pixels = load_overlay(self._asset_dir, layer.asset_path)
        except AssetError as exc:
            self.overlay_errors[layer.id] = str(exc)
            return None
        used_images.add(layer.asset_path)
        cached = self._images.get(layer.asset_path)
        if cached is None or cached[0] is not pixels:
            if cached is not None:
                cached[1].release()
            cached = self._images[layer.asset_path] = (pixels, StaticTexture(self._ctx, pixels))
            self.stats.image_uploads += 1
        return cached[1].texture, False, cached[1].opaque

    def _drop_unused(self, frames: Mapping[str, SourceFrame], used_texts: set[TextStyle], used_images: set[str]) -> None:
        for pin in [pin for pin in self._sources if pin not in frames]:
            self._sources.pop(pin).release()
        for pin in [pin for pin in self._plane_sources if pin not in frames]:
            self._plane_sources.pop(pin).release()
        for style in [style for style in self._texts if style not in used_texts]:
            self._texts.pop(style).release()
        for path in [path for path in self._images if path not in used_images]:
            self._images.pop(path)[1].release()

    # -- teardown --------------------------------------------------------

    def release(self) -> None:
        """Free every GL object this renderer made; safe to call twice."""
        if self._no_target is not None:
            self._no_target.use()
        for source in self._sources.values():
            source.release()
        self._sources.clear()
        for plane_source in self._plane_sources.values():
            plane_source.release()
        self._plane_sources.clear()
        for text in self._texts.values():
            text.release()
        self._texts.clear()
        for _, image in self._images.values():
            image.release()
        self._images.clear()
        self._release_targets()
        if self._layer_pass is not None:
            self._layer_pass.release()
            self._layer_pass = None
        if self._yuv_pass is not None:
            self._yuv_pass.release()
            self._yuv_pass = None
        if self._no_target is not None:
            self._no_target.release()  # a wrapper of framebuffer 0: frees no GL object
            self._no_target = None
        collect_garbage(self._ctx)
