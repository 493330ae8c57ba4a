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

Beyond one picture per frame (``render``), a frame may draw several, between
``begin_frame`` and ``end_frame`` (what one frame uses is kept for the next):
the program (``draw_program``), mixed from two scenes during a transition
(``render/transitions``: each scene drawn into a canvas, then the mix pass,
or from ``take_snapshot``, a copy of what the output showed), and the preview
(``draw_preview``, its own targets and read back). ``program_texture`` and
``preview_texture`` hand the pictures to other compositors of the same
render thread as ``TextureFrame`` inputs (nested compositors), with no read
back: their read back (``read_back=False``) is only for sinks.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import moderngl

from compositord.daemon.engine.render import raw_gl
from compositord.daemon.engine.render.frames import COLOR_MATRICES, InputFrame, OutputFrame, SourceFrame, TextureFrame
from compositord.daemon.engine.render.gl_context import collect_garbage
from compositord.daemon.engine.render.images import AssetError, load_overlay
from compositord.daemon.engine.render.layer_pass import LayerPass, is_screen_aligned
from compositord.daemon.engine.render.output_pass import OutputTargets
from compositord.daemon.engine.render.plane_pass import PlaneSource, draw_planes, planes_apply
from compositord.daemon.engine.render.readback import Readback, ReadbackMode
from compositord.daemon.engine.render.scene import ResolvedLayer, ResolvedScene
from compositord.daemon.engine.render.source_textures import SourceTexture, StaticTexture, as_buffer
from compositord.daemon.engine.render.text import TextStyle, rasterize_text
from compositord.daemon.engine.render.transitions import Canvas, TransitionPass
from compositord.daemon.engine.render.yuv_input_pass import YuvInputPass
from compositord.protocol.scenes import MixGeometry

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
    transition_frames: int = 0  # program frames mixed from two pictures
    preview_frames: int = 0


@dataclass(frozen=True)
class Transition:
    """A program frame mixed from two pictures: ``outgoing`` drawn live, or None for the snapshot
    (``Renderer.take_snapshot``), and the incoming scene, as ``mix`` says."""

    mix: MixGeometry
    outgoing: ResolvedScene | None = None


class _Frame:
    """What one frame used, so that ``end_frame`` releases only the rest."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.texts: set[TextStyle] = set()
        self.images: set[str] = set()
        self.canvases: set[str] = set()
        self.preview = False


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
        self._transition_pass: TransitionPass | None = None  # made at the first transition
        self._canvases: dict[str, Canvas] = {}  # "outgoing", "incoming", "snapshot": made on demand
        self._preview: OutputTargets | None = None
        self._preview_readback: Readback | None = None
        self._frame: _Frame | None = None
        # Whether the program target holds this frame's composite as RGBA (not after a plane-by-plane
        # frame), and whether it is opaque: what a snapshot or a nesting compositor may take of it.
        self._program_picture: bool = False
        self._program_opaque = False
        self._preview_opaque = False
        self.stats = RenderStats()
        self.overlay_errors: dict[str, str] = {}  # overlay id -> why it was not drawn (last frame)
        self._allocate(width, height, output_format)

    # -- targets ---------------------------------------------------------

    def _allocate(self, width: int, height: int, output_format: str) -> None:
        self._release_targets()
        self._targets = OutputTargets(self._ctx, width, height, output_format, self._color_matrix)
        self._readback = Readback(self._ctx, self._targets.planes, self._readback_mode)

    def _release_targets(self) -> None:
        self._program_picture = False
        if self._readback is not None:
            self._readback.release()
            self._readback = None
        if self._targets is not None:
            self._targets.release()
            self._targets = None

    def _program_targets(self, scene: ResolvedScene) -> OutputTargets:
        targets = self._targets
        assert targets is not None
        wanted = (scene.width, scene.height, scene.output_format, scene.color_matrix)
        if (targets.width, targets.height, targets.output_format, targets.color_matrix) != wanted:
            self._color_matrix = scene.color_matrix
            self._allocate(scene.width, scene.height, scene.output_format)
            targets = self._targets
            assert targets is not None
        return targets

    def _release_preview(self) -> None:
        if self._preview_readback is not None:
            self._preview_readback.release()
            self._preview_readback = None
        if self._preview is not None:
            self._preview.release()
            self._preview = None

    def _canvas(self, name: str, size: tuple[int, int]) -> Canvas:
        """A scratch picture of the canvas size, kept while frames use it."""
        canvas = self._canvases.get(name)
        if canvas is not None and canvas.size != size:
            self._canvases.pop(name).release()
            canvas = None
        if canvas is None:
            canvas = self._canvases[name] = Canvas(self._ctx, *size)
        assert self._frame is not None
        self._frame.canvases.add(name)
        return canvas

    # -- per frame -------------------------------------------------------

    def render(self, scene: ResolvedScene, frames: Mapping[str, InputFrame]) -> OutputFrame:
        """One frame with one picture: ``scene`` on the program output, read back."""
        self.begin_frame()
        try:
            output = self.draw_program(scene, frames)
        finally:
            self.end_frame(frames)
        assert output is not None
        return output

    def begin_frame(self) -> None:
        if self._layer_pass is None:
            raise RuntimeError("Renderer.begin_frame after release()")
        self._frame = _Frame()
        self.overlay_errors = {}

    def draw_program(
        self,
        scene: ResolvedScene,
        frames: Mapping[str, InputFrame],
        *,
        transition: Transition | None = None,
        read_back: bool = True,
        keep_rgba: bool = False,
    ) -> OutputFrame | None:
        """The program picture of this frame: ``scene``, or mixed into it from ``transition``'s outgoing
        picture; read back unless told not to (a picture only other compositors take).

        ``keep_rgba``: the RGBA target must hold the picture (another compositor draws from it), so the
        plane-by-plane path, which skips it, is not taken.
        """
        frame = self._frame
        if frame is None or self._layer_pass is None:
            raise RuntimeError("Renderer.draw_program outside begin_frame() / end_frame()")
        targets = self._program_targets(scene)
        canvas = (scene.width, scene.height)
        if transition is not None and transition.outgoing is None and not self._snapshot_fits(canvas):
            transition = None  # nothing to go on from (a canvas of another size): the incoming scene at once
        planes = targets.luma_target, targets.chroma_target
        if (
            transition is None
            and not keep_rgba
            and planes[0] is not None
            and planes[1] is not None
            and planes_apply(scene, frames)
        ):
            # planes_apply found every layer's frame an NV12 SourceFrame.
            nv12 = cast(Mapping[str, SourceFrame], frames)
            uploads, direct = draw_planes(self._ctx, self._layer_pass, scene, nv12, self._plane_sources, planes[0], planes[1])
            self.stats.source_uploads += uploads
            self.stats.direct_writes += int(direct)
            self.stats.plane_frames += 1
            self._program_picture = False
            return self._program_output(targets, read_back)
        if transition is None:
            self._compose(scene, frames, targets.frame, targets.frame_fbo)
        else:
            self._draw_transition(scene, frames, transition, targets, canvas)
            self.stats.transition_frames += 1
        self._program_picture = True
        # Both scenes share the node's background; a snapshot is of an earlier program picture of it.
        self._program_opaque = scene.background[3] >= 1.0
        targets.convert()
        return self._program_output(targets, read_back)

    def _draw_transition(
        self,
        scene: ResolvedScene,
        frames: Mapping[str, InputFrame],
        transition: Transition,
        targets: OutputTargets,
        canvas: tuple[int, int],
    ) -> None:
        """The outgoing picture into the target where it stays in place (else into a canvas), the incoming
        one into a canvas, then the mix (``render/transitions``)."""
        outgoing: moderngl.Texture | None = None
        if transition.mix.from_offset == (0, 0):
            if transition.outgoing is not None:
                self._compose(transition.outgoing, frames, targets.frame, targets.frame_fbo)
            else:
                self._ctx.copy_framebuffer(targets.frame_fbo, self._canvas("snapshot", canvas).fbo)
        elif transition.outgoing is not None:
            picture = self._canvas("outgoing", canvas)
            self._compose(transition.outgoing, frames, picture.texture, picture.fbo)
            outgoing = picture.texture
        else:
            outgoing = self._canvas("snapshot", canvas).texture
        incoming = self._canvas("incoming", canvas)
        self._compose(scene, frames, incoming.texture, incoming.fbo)
        if self._transition_pass is None:
            assert self._layer_pass is not None
            self._transition_pass = TransitionPass(self._layer_pass)
        self._transition_pass.draw(targets.frame_fbo, canvas, transition.mix, outgoing, incoming.texture)

    def draw_preview(
        self, scene: ResolvedScene, frames: Mapping[str, InputFrame], *, read_back: bool = True
    ) -> OutputFrame | None:
        """The preview picture of this frame, into targets of its own (kept while frames draw it)."""
        frame = self._frame
        if frame is None:
            raise RuntimeError("Renderer.draw_preview outside begin_frame() / end_frame()")
        preview = self._preview
        wanted = (scene.width, scene.height, scene.output_format, scene.color_matrix)
        if preview is None or (preview.width, preview.height, preview.output_format, preview.color_matrix) != wanted:
            self._release_preview()
            preview = self._preview = OutputTargets(self._ctx, scene.width, scene.height, scene.output_format, scene.color_matrix)
            self._preview_readback = Readback(self._ctx, preview.planes, self._readback_mode)
        frame.preview = True
        self._preview_opaque = scene.background[3] >= 1.0
        self._compose(scene, frames, preview.frame, preview.frame_fbo)
        preview.convert()
        self.stats.preview_frames += 1
        if not read_back:
            return None
        data = self._read_planes(self._preview_readback)
        return OutputFrame(
            pixel_format=preview.output_format,  # type: ignore[arg-type]
            width=preview.width,
            height=preview.height,
            data=data,
            color_matrix=preview.color_matrix,  # type: ignore[arg-type]
            frame_number=self.stats.frames,
        )

    def take_snapshot(self) -> bool:
        """Copy the program picture (what the output shows now) for a transition to start from
        (``Transition(outgoing=None)``); False when there is none to copy (before the first frame,
        after a plane-by-plane frame)."""
        if self._frame is None:
            raise RuntimeError("Renderer.take_snapshot outside begin_frame() / end_frame()")
        targets = self._targets
        if not self._program_picture or targets is None:
            return False
        snapshot = self._canvas("snapshot", (targets.width, targets.height))
        self._ctx.copy_framebuffer(snapshot.fbo, targets.frame_fbo)
        return True

    def _snapshot_fits(self, canvas: tuple[int, int]) -> bool:
        snapshot = self._canvases.get("snapshot")
        if snapshot is None or snapshot.size != canvas:
            return False
        assert self._frame is not None
        self._frame.canvases.add("snapshot")
        return True

    def program_texture(self) -> TextureFrame | None:
        """The program picture drawn last, for another compositor of this render thread (None after a
        plane-by-plane frame: draw with ``keep_rgba``)."""
        targets = self._targets
        if not self._program_picture or targets is None:
            return None
        return TextureFrame(targets.frame, targets.width, targets.height, self._program_opaque, targets.frame_fbo)

    def preview_texture(self) -> TextureFrame | None:
        """The preview picture, if this frame drew one."""
        preview = self._preview
        if preview is None or self._frame is None or not self._frame.preview:
            return None
        return TextureFrame(preview.frame, preview.width, preview.height, self._preview_opaque, preview.frame_fbo)

    def end_frame(self, frames: Mapping[str, InputFrame]) -> None:
        """Release what this frame did not use; bound to framebuffer 0 again."""
        frame = self._frame
        if frame is None:
            return
        self._frame = None
        assert self._no_target is not None
        self._no_target.use()
        self._drop_unused(frames, frame.texts, frame.images)
        for name in [name for name in self._canvases if name not in frame.canvases]:
            self._canvases.pop(name).release()
        if not frame.preview:
            self._release_preview()
        self.stats.leaked_objects_collected += collect_garbage(self._ctx)
        self.stats.last_render_ms = (time.perf_counter() - frame.started) * 1000.0

    def _compose(
        self, scene: ResolvedScene, frames: Mapping[str, InputFrame], texture: moderngl.Texture, fbo: moderngl.Framebuffer
    ) -> None:
        """Draw ``scene`` into a canvas-sized RGBA target (its texture and framebuffer)."""
        assert self._layer_pass is not None and self._frame is not None
        canvas = (scene.width, scene.height)
        layers = list(scene.layers)
        bottom = frames.get(layers[0].id) if layers and layers[0].kind == "video" else None
        if layers and self._can_write_directly(layers[0], frames, canvas):
            raw_gl.upload_rgba(texture, as_buffer(frames[layers[0].id].data))  # type: ignore[union-attr]
            self.stats.direct_writes += 1
            layers = layers[1:]
            fbo.use()
        elif (
            isinstance(bottom, TextureFrame)
            and bottom.opaque
            and bottom.framebuffer is not None
            and layers[0].covers_canvas_unscaled((bottom.width, bottom.height), canvas)
        ):
            # Another compositor's opaque picture, 1:1 over the whole canvas: a blit, cheaper than drawing it.
            self._ctx.copy_framebuffer(fbo, bottom.framebuffer)
            self.stats.direct_writes += 1
            layers = layers[1:]
            fbo.use()
        else:
            fbo.use()
            r, g, b, a = scene.background
            fbo.clear(*raw_gl.stored_color(r * a, g * a, b * a, a))

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
            drawable = self._texture_for(layer, frames, self._frame.texts, self._frame.images)
            if drawable is None:
                continue
            layer_texture, premultiply, opaque = drawable
            aligned = is_screen_aligned(layer)
            if unflushed and aligned != previous_aligned:
                # llvmpipe rasterizes a 64x64 tile with its fast linear path only when every primitive
                # binned to it is a screen-aligned rectangle: a rotated layer sharing a scene with
                # rectangles would send the rectangles' tiles down the general path too.
                raw_gl.flush()
            previous_aligned = aligned
            fbo.use()
            self._layer_pass.draw(layer_texture, layer, canvas, premultiply=premultiply, opaque_source=opaque)
            unflushed = True

    def _program_output(self, targets: OutputTargets, read_back: bool) -> OutputFrame | None:
        """Count the program frame and read it back (None when it is not to be read)."""
        self.stats.frames += 1
        if not read_back:
            return None
        data = self._read_planes(self._readback)
        return OutputFrame(
            pixel_format=targets.output_format,  # type: ignore[arg-type]
            width=targets.width,
            height=targets.height,
            data=data,
            color_matrix=self._color_matrix,  # type: ignore[arg-type]
            frame_number=self.stats.frames,
        )

    @staticmethod
    def _read_planes(readback: Readback | None) -> bytes:
        assert readback is not None
        return readback.read()

    @staticmethod
    def _can_write_directly(layer: ResolvedLayer, frames: Mapping[str, InputFrame], canvas: tuple[int, int]) -> bool:
        """Opaque RGBA, exactly canvas-sized, drawn 1:1: its pixels *are* the frame's bottom."""
        if layer.kind != "video" or layer.id not in frames:
            return False
        frame = frames[layer.id]
        return (
            isinstance(frame, SourceFrame)
            and frame.pixel_format == "rgba8"
            and frame.opaque
            and layer.covers_canvas_unscaled((frame.width, frame.height), canvas)
        )

    def _will_upload(self, layer: ResolvedLayer, frames: Mapping[str, InputFrame]) -> bool:
        """Whether drawing ``layer`` starts with copying a new source frame in."""
        frame = frames.get(layer.id) if layer.kind == "video" else None
        if frame is None or isinstance(frame, TextureFrame):
            return False
        source = self._sources.get(layer.id)
        return source is None or source.needs_upload(frame)

    def _texture_for(
        self,
        layer: ResolvedLayer,
        frames: Mapping[str, InputFrame],
        used_texts: set[TextStyle],
        used_images: set[str],
    ) -> tuple[moderngl.Texture, bool, bool] | None:
        """(texture, premultiply in shader, opaque) for the layer, uploading what changed."""
        if layer.kind == "video":
            frame = frames.get(layer.id)
            if frame is None:
                return None
            if isinstance(frame, TextureFrame):
                return frame.texture, False, frame.opaque  # premultiplied already: drawn as it is
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

    def _drop_unused(self, frames: Mapping[str, InputFrame], used_texts: set[TextStyle], used_images: set[str]) -> None:
        for pin in [pin for pin in self._sources if not isinstance(frames.get(pin), SourceFrame)]:
            self._sources.pop(pin).release()
        for pin in [pin for pin in self._plane_sources if not isinstance(frames.get(pin), SourceFrame)]:
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
        for canvas in self._canvases.values():
            canvas.release()
        self._canvases.clear()
        self._transition_pass = None  # it owns no GL object: it draws with the layer pass
        self._release_preview()
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
