"""`compositord render SCENE --out frame.png`: one frame of a pipeline file, to look at.

SCENE is a pipeline file (TOML or YAML, docs/INTERNALS.md "Node params in a
pipeline"), validated as the daemon validates it. The compositor node (the
only one, or ``--node``) is rendered once with its inputs: the source kinds the
engine's registry marks standalone (colorbars, images) are made here, and a
compositor that feeds it (nested) is drawn first, as the daemon does; the
other sources (files, pushed frames) have no frame outside the daemon and are
left unconnected, with a warning. Image assets are looked up in ``--asset-dir``
(default: the scene file's folder).

With scenes: ``--scene NAME`` draws that scene instead of ``program_scene``;
``--to NAME --at P`` draws the transition (the params' ``transition``) from
the program scene (or ``--scene``) to NAME at progress P (0..1, before easing),
as the output shows it in the frame at that point of the transition.

NV12 / I420 output is converted back to RGB for the PNG (nearest-neighbour
chroma), so the PNG shows what a YUV sink would get.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from compositord.daemon.engine.render.frames import OutputFrame, SourceFrame

EXIT_OK = 0
EXIT_RENDER_WARNINGS = 1
EXIT_BAD_INPUT = 2
EXIT_NO_GL = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scene", metavar="SCENE", type=Path, help="pipeline file (.toml, .yaml or .yml)")
    parser.add_argument("--out", metavar="PNG", type=Path, required=True, help="where to write the frame")
    parser.add_argument("--asset-dir", metavar="DIR", type=Path, help="asset directory (default: the scene file's folder)")
    parser.add_argument("--node", metavar="ID", help="the compositor node to render (default: the only one)")
    parser.add_argument(
        "--device", metavar="N", type=int, help="EGL device index (default: $COMPOSITORD_EGL_DEVICE or the first)"
    )
    parser.add_argument(
        "--scene", dest="scene_name", metavar="NAME", help="draw this scene of the node instead of its program_scene"
    )
    parser.add_argument("--to", metavar="NAME", help="draw the transition from the scene to NAME (the params' transition)")
    parser.add_argument("--at", metavar="P", type=float, default=0.5, help="with --to: progress 0..1 before easing (default 0.5)")


def output_to_rgba(output: OutputFrame) -> np.ndarray:
    """Straight-alpha RGBA (h, w, 4) uint8 of any OutputFrame, for a PNG."""
    import numpy as np

    from compositord.daemon.engine.render.frames import LUMA_COEFFICIENTS

    if output.pixel_format == "rgba8":
        premultiplied = output.as_array().astype(np.float64)
        alpha = premultiplied[..., 3:4]
        rgb = np.where(alpha > 0, premultiplied[..., :3] * 255.0 / np.maximum(alpha, 1.0), 0.0)
        return np.concatenate([np.clip(np.rint(rgb), 0, 255), alpha], axis=-1).astype(np.uint8)
    luma = output.plane(0).astype(np.float64)
    if output.pixel_format == "nv12":
        chroma = output.plane(1).astype(np.float64)
    else:
        chroma = np.stack([output.plane(1), output.plane(2)], axis=-1).astype(np.float64)
    chroma = chroma.repeat(2, axis=0).repeat(2, axis=1)[: output.height, : output.width]
    kr, kb = LUMA_COEFFICIENTS[output.color_matrix]
    y = (luma - 16.0) / 219.0
    cb = (chroma[..., 0] - 128.0) / 224.0
    cr = (chroma[..., 1] - 128.0) / 224.0
    r = y + 2 * (1 - kr) * cr
    b = y + 2 * (1 - kb) * cb
    g = (y - kr * r - kb * b) / (1 - kr - kb)
    rgb = np.clip(np.rint(np.stack([r, g, b], axis=-1) * 255.0), 0, 255)
    return np.concatenate([rgb, np.full((*rgb.shape[:2], 1), 255.0)], axis=-1).astype(np.uint8)


def main(args: argparse.Namespace) -> int:
    from PIL import Image

    from compositord.daemon.config import ConfigError, load_pipeline
    from compositord.protocol import params as protocol_params
    from compositord.protocol.params import COMPOSITOR_KIND
    from compositord.protocol.scenes import scene_params

    try:
        pipeline = load_pipeline(args.scene, context=protocol_params.ONE_SHOT)  # a local user's own command
    except ConfigError as exc:
        print(f"compositord render: {args.scene} cannot be rendered:", file=sys.stderr)
        for line in exc.lines():
            print(f"  {line}", file=sys.stderr)
        return EXIT_BAD_INPUT

    nodes: dict[str, dict[str, Any]] = pipeline["nodes"]
    compositors = [node_id for node_id, node in nodes.items() if node["kind"] == COMPOSITOR_KIND]
    node_id = args.node
    if node_id is None:
        if len(compositors) != 1:
            print(
                f"compositord render: {len(compositors)} compositor nodes ({', '.join(compositors) or 'none'}); name one with --node",
                file=sys.stderr,
            )
            return EXIT_BAD_INPUT
        node_id = compositors[0]
    elif node_id not in compositors:
        print(f"compositord render: --node {node_id!r} is not a compositor node of {args.scene}", file=sys.stderr)
        return EXIT_BAD_INPUT

    params = protocol_params.with_defaults(COMPOSITOR_KIND, nodes[node_id]["params"])
    for option, name in (("--scene", args.scene_name), ("--to", args.to)):
        if name is not None and name not in params["scenes"]:
            listed = ", ".join(params["scenes"]) or "none"
            print(f"compositord render: {option} {name!r}: {node_id} has no such scene (scenes: {listed})", file=sys.stderr)
            return EXIT_BAD_INPUT
    if not 0.0 <= args.at <= 1.0:
        print(f"compositord render: --at {args.at}: must be between 0 and 1", file=sys.stderr)
        return EXIT_BAD_INPUT

    from compositord.daemon.engine import compositor_graph
    from compositord.daemon.engine.render.gl_context import GLContextError, create_context
    from compositord.daemon.engine.render.renderer import Renderer, Transition
    from compositord.daemon.engine.render.scene import resolve_scene
    from compositord.daemon.state.model import SessionRecord
    from compositord.protocol.scenes import TransitionSpec, ease, mix_geometry

    asset_dir = args.asset_dir if args.asset_dir is not None else args.scene.resolve().parent
    session = SessionRecord.from_pipeline("render", args.scene.stem, pipeline)
    needed = _feeding_compositors(session, node_id)
    order = [compositor for compositor in compositor_graph.render_order(session) if compositor in needed]
    warnings: list[str] = []
    source_frames = _source_frames(nodes, session, order, asset_dir, warnings)
    try:
        ctx = create_context(args.device)
    except GLContextError as exc:
        print(f"compositord render: {exc}", file=sys.stderr)
        return EXIT_NO_GL
    renderers: list[Renderer] = []
    pictures: dict[tuple[str, str], Any] = {}
    try:
        for compositor in order:
            full = protocol_params.with_defaults(COMPOSITOR_KIND, nodes[compositor]["params"])
            frames: dict[str, Any] = {}
            for pin, connection in session.inputs_of(compositor).items():
                picture = pictures.get((connection.from_node, connection.from_pin))
                frame = picture if picture is not None else source_frames.get(connection.from_node)
                if frame is not None:
                    frames[pin] = frame
            shown = args.scene_name if compositor == node_id and args.scene_name is not None else full["program_scene"]
            scene = resolve_scene(scene_params(full, shown), frames, asset_dir=asset_dir)
            transition = None
            if compositor == node_id and args.to is not None:
                incoming = resolve_scene(scene_params(full, args.to), frames, asset_dir=asset_dir)
                spec = TransitionSpec.from_params(full["transition"])
                if spec.kind != "cut" and args.at < 1.0:
                    transition = Transition(mix_geometry(spec, ease(spec.easing, args.at), full["width"], full["height"]), scene)
                scene, shown = incoming, args.to
            for overlay_id, message in scene.errors:
                warnings.append(f"{compositor}: overlay {overlay_id}: {message}")
            renderer = Renderer(ctx, scene.width, scene.height, scene.output_format, scene.color_matrix, asset_dir)
            renderers.append(renderer)
            renderer.begin_frame()
            try:
                output = renderer.draw_program(scene, frames, transition=transition, keep_rgba=compositor != node_id)
                pictures[(compositor, "out")] = renderer.program_texture()
                if full["preview_scene"] is not None and compositor != node_id:
                    preview = resolve_scene(scene_params(full, full["preview_scene"]), frames, asset_dir=asset_dir)
                    renderer.draw_preview(preview, frames, read_back=False)
                    pictures[(compositor, "preview")] = renderer.preview_texture()
            finally:
                renderer.end_frame(frames)
            warnings.extend(f"{compositor}: overlay {key}: {message}" for key, message in renderer.overlay_errors.items())
    finally:
        for renderer in renderers:
            renderer.release()
        ctx.release()

    assert output is not None
    Image.fromarray(output_to_rgba(output), "RGBA").save(args.out)
    what = f"scene {shown!r}" if shown is not None else "its layout"
    if transition is not None:
        what = f"{transition.mix.kind} to scene {args.to!r} at {args.at:g}"
    print(f"{args.out}: {output.width}x{output.height}, {output.pixel_format} output, {what}, {len(scene.layers)} layers drawn")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_RENDER_WARNINGS if warnings else EXIT_OK


def _feeding_compositors(session: Any, node_id: str) -> set[str]:
    """``node_id`` and every compositor whose output reaches it."""
    found = {node_id}
    waiting = [node_id]
    while waiting:
        for connection in session.inputs_of(waiting.pop()).values():
            upstream = session.nodes.get(connection.from_node)
            if upstream is not None and upstream.kind == "video::compositor" and connection.from_node not in found:
                found.add(connection.from_node)
                waiting.append(connection.from_node)
    return found


def _source_frames(
    nodes: dict[str, dict[str, Any]], session: Any, compositors: list[str], asset_dir: Path, warnings: list[str]
) -> dict[str, SourceFrame]:
    """One frame of every source node connected to one of ``compositors`` (the standalone kinds)."""
    from compositord.daemon.engine import registry
    from compositord.daemon.engine.render.images import AssetError
    from compositord.daemon.engine.sources.base import SourceContext
    from compositord.daemon.engine.sources.push import PushInlets
    from compositord.protocol import params as protocol_params

    frames: dict[str, SourceFrame] = {}
    for compositor in compositors:
        for pin, connection in session.inputs_of(compositor).items():
            source_id = connection.from_node
            source_node = nodes[source_id]
            if source_node["kind"] == "video::compositor" or source_id in frames:
                continue
            implementation = registry.source(source_node["kind"])
            if implementation is None or not implementation.standalone:
                warnings.append(f"{source_id}: {source_node['kind']} has no frame outside the daemon; {pin} left empty")
                continue
            source_params = protocol_params.with_defaults(source_node["kind"], source_node["params"])
            try:
                source = implementation.make(source_params, SourceContext(source_id, asset_dir, PushInlets()))
            except (AssetError, ValueError) as exc:
                warnings.append(f"{source_id}: {exc}")
                continue
            frame = source.frame(0.0)
            if frame is not None:
                frames[source_id] = frame
    return frames
