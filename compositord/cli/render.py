"""`compositord render SCENE --out frame.png`: one frame of a pipeline file, to look at.

SCENE is a pipeline file (TOML or YAML, docs/INTERNALS.md "Node params in a
pipeline"), validated as the daemon validates it. The compositor node (the
only one, or ``--node``) is rendered once with its inputs: the source kinds the
engine's registry marks standalone (colorbars, images) are made here; the
others (files, pushed frames) have no frame outside the daemon and are left
unconnected, with a warning. Image assets are looked up in ``--asset-dir`` (default: the
scene file's folder).

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
        pipeline = load_pipeline(args.scene)
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

    asset_dir = args.asset_dir if args.asset_dir is not None else args.scene.resolve().parent
    from compositord.daemon.engine import registry
    from compositord.daemon.engine.render.images import AssetError
    from compositord.daemon.engine.sources.base import SourceContext
    from compositord.daemon.engine.sources.push import PushInlets

    frames: dict[str, SourceFrame] = {}
    warnings: list[str] = []
    for connection in pipeline["connections"]:
        if connection["to_node"] != node_id:
            continue
        source_id = connection["from_node"]
        source_node = nodes[source_id]
        implementation = registry.source(source_node["kind"])
        if implementation is None or not implementation.standalone:
            warnings.append(
                f"{source_id}: {source_node['kind']} has no frame outside the daemon; {connection['to_pin']} left empty"
            )
            continue
        source_params = protocol_params.with_defaults(source_node["kind"], source_node["params"])
        try:
            source = implementation.make(source_params, SourceContext(source_id, asset_dir, PushInlets()))
        except (AssetError, ValueError) as exc:
            warnings.append(f"{source_id}: {exc}")
            continue
        frame = source.frame(0.0)
        if frame is not None:
            frames[connection["to_pin"]] = frame

    from compositord.daemon.engine.render.gl_context import GLContextError, create_context
    from compositord.daemon.engine.render.renderer import Renderer
    from compositord.daemon.engine.render.scene import resolve_scene

    params = protocol_params.with_defaults(COMPOSITOR_KIND, nodes[node_id]["params"])
    scene = resolve_scene(scene_params(params, params["program_scene"]), frames, asset_dir=asset_dir)
    warnings.extend(f"overlay {overlay_id}: {message}" for overlay_id, message in scene.errors)
    try:
        ctx = create_context(args.device)
    except GLContextError as exc:
        print(f"compositord render: {exc}", file=sys.stderr)
        return EXIT_NO_GL
    renderer = Renderer(ctx, scene.width, scene.height, scene.output_format, scene.color_matrix, asset_dir)
    try:
        output = renderer.render(scene, frames)
        warnings.extend(f"overlay {overlay_id}: {message}" for overlay_id, message in renderer.overlay_errors.items())
    finally:
        renderer.release()
        ctx.release()

    Image.fromarray(output_to_rgba(output), "RGBA").save(args.out)
    print(f"{args.out}: {output.width}x{output.height}, {output.pixel_format} output, {len(scene.layers)} layers drawn")
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return EXIT_RENDER_WARNINGS if warnings else EXIT_OK
