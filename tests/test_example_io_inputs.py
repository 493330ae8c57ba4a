"""examples/example-io-pipeline.yaml, inputs half: a looping video file, an image and a pushed stream
reach the compositor together (the sinks of that file, if any, are left out here: their tests are theirs)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from compositord.daemon.config import load_pipeline
from compositord.protocol import params
from compositord.testing.media import write_clip
from compositord.testing.plugin import settings_for

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "example-io-pipeline.yaml"
LOGO = Path(__file__).resolve().parent.parent / "examples" / "assets" / "logo.png"


def inputs_half(pipeline: dict[str, Any]) -> dict[str, Any]:
    sinks = {node_id for node_id, node in pipeline["nodes"].items() if params.role(node["kind"]) == "sink"}
    return {
        "nodes": {node_id: node for node_id, node in pipeline["nodes"].items() if node_id not in sinks},
        "connections": [c for c in pipeline["connections"] if c["to_node"] not in sinks],
    }


@pytest.fixture
def compositord_settings(tmp_path: Path) -> Any:
    settings = settings_for(tmp_path / "state", inputs_half(load_pipeline(EXAMPLE)))
    settings.asset_dir.mkdir(parents=True)
    shutil.copy(LOGO, settings.asset_dir / "logo.png")
    # FFV1 (in every FFmpeg build) in the MP4 the example names: the decoder goes by the content, not the name.
    write_clip(settings.asset_dir / "clip.mp4", frames=10, fps=30, width=640, height=360, codec="ffv1")
    return settings


async def test_file_image_and_pushed_stream_are_composited(compositord_daemon: Any, compositord_client: Any) -> None:
    client, session = compositord_client, compositord_daemon.session_id
    camera = load_pipeline(EXAMPLE)["nodes"]["camera"]["params"]
    width, height = camera["width"], camera["height"]
    luma = np.full(width * height, 128, np.uint8)
    chroma = np.full(width * height // 2, 128, np.uint8)
    await client.push_frame("camera", width, height, camera["pixel_format"], np.concatenate([luma, chroma]))
    with trio.fail_after(10):
        while True:
            pipeline = await client.get_pipeline(session)
            layers = {layer["id"]: layer for layer in pipeline["nodes"]["compositor"]["view_data"]["layers"]}
            if len(layers) == 3:
                break
            await trio.sleep(0.05)
    assert (layers["in_0"]["source_width"], layers["in_0"]["source_height"]) == (640, 360)  # the clip
    assert (layers["in_2"]["source_width"], layers["in_2"]["source_height"]) == (width, height)  # the pushed frame
    assert {node_id: node["state"] for node_id, node in pipeline["nodes"].items()} == {
        "clip": "ok",
        "logo": "ok",
        "camera": "ok",
        "compositor": "ok",
    }
