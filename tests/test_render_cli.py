"""`compositord render`: the demo scene to PNG, bad scenes refused with paths."""

from __future__ import annotations

from pathlib import Path

import moderngl
import numpy as np
import pytest
from PIL import Image

from compositord import cli
from compositord.cli.render import EXIT_BAD_INPUT, EXIT_OK, EXIT_RENDER_WARNINGS
from compositord.protocol.layout import auto_pip_box

DEMO = Path(__file__).resolve().parent.parent / "examples" / "demo-scene.yaml"
COLOR_TOLERANCE = 10  # the demo is NV12: chroma subsampling and rounding move colours a little


def close(pixel: np.ndarray, expected: tuple[int, int, int]) -> bool:
    return bool(np.abs(pixel[:3].astype(int) - expected).max() <= COLOR_TOLERANCE)


@pytest.mark.gl
def test_demo_scene_renders_every_feature(gl_ctx: moderngl.Context, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo.png"
    assert cli.main(["render", str(DEMO), "--out", str(out)]) == EXIT_OK, capsys.readouterr().err
    image = np.asarray(Image.open(out).convert("RGBA"))
    assert image.shape == (720, 1280, 4)
    assert close(image[30, 640], (0, 191, 0))  # bars, green, untouched by layers
    assert close(image[70, 870], (191, 0, 191))  # inside in_3's rect, outside its circle: bars show
    assert not close(image[180, 1040], (191, 0, 0))  # circle centre: the cropped logo, not the red bar
    title = image[640:720, 200:700, :3].astype(int)
    assert (np.abs(title - (255, 106, 0)).max(axis=-1) <= 30).sum() > 1000  # the orange title is there
    pip = image[480:700, 833:1260, :3]  # in_4 auto-PiP: sea green at 0.6 over the bars
    assert pip[..., 1].mean() > pip[..., 0].mean() + 30


@pytest.mark.gl
def test_toml_scene_with_missing_asset_warns_and_still_renders(
    gl_ctx: moderngl.Context, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene = tmp_path / "scene.toml"
    scene.write_text(
        '[nodes.bars]\nkind = "video::colorbars"\nparams = {width = 64, height = 32, pattern = "solid", color = "#FF0000FF"}\n'
        '[nodes.comp]\nkind = "video::compositor"\n'
        'params = {width = 64, height = 32, image_overlays = [{id = "gone", asset_path = "gone.png"}]}\n'
        '[[connections]]\nfrom_node = "bars"\nfrom_pin = "out"\nto_node = "comp"\nto_pin = "in_0"\n'
    )
    out = tmp_path / "frame.png"
    assert cli.main(["render", str(scene), "--out", str(out)]) == EXIT_RENDER_WARNINGS
    assert "overlay gone" in capsys.readouterr().err
    image = np.asarray(Image.open(out).convert("RGBA"))
    assert image.shape == (32, 64, 4) and close(image[16, 32], (255, 0, 0))


def test_invalid_scene_is_refused_with_the_field_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = tmp_path / "bad.yaml"
    scene.write_text('nodes:\n  comp: {kind: "video::compositor", params: {layers: {in_1: {opacity: 3}}}}\n')
    out = tmp_path / "never.png"
    assert cli.main(["render", str(scene), "--out", str(out)]) == EXIT_BAD_INPUT
    assert "/nodes/comp/params/layers/in_1/opacity" in capsys.readouterr().err
    assert not out.exists()


def test_unknown_file_type_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scene = tmp_path / "scene.json"
    scene.write_text("{}")
    assert cli.main(["render", str(scene), "--out", str(tmp_path / "x.png")]) == EXIT_BAD_INPUT
    assert "unknown file type" in capsys.readouterr().err


@pytest.mark.gl
def test_a_source_with_no_frame_outside_the_daemon_is_left_out_with_a_warning(
    gl_ctx: moderngl.Context, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scene = tmp_path / "scene.yaml"
    scene.write_text(
        "nodes:\n"
        '  bars: {kind: "video::colorbars", params: {width: 64, height: 32, pattern: "solid", color: "#00FF00FF"}}\n'
        '  cam: {kind: "video::push", params: {width: 64, height: 32}}\n'
        '  comp: {kind: "video::compositor", params: {width: 64, height: 32, num_inputs: 2}}\n'
        "connections:\n"
        "  - {from_node: bars, from_pin: out, to_node: comp, to_pin: in_0}\n"
        "  - {from_node: cam, from_pin: out, to_node: comp, to_pin: in_1}\n"
    )
    out = tmp_path / "frame.png"
    assert cli.main(["render", str(scene), "--out", str(out)]) == EXIT_RENDER_WARNINGS
    captured = capsys.readouterr()
    assert "cam: video::push has no frame outside the daemon; in_1 left empty" in captured.err
    assert "1 layers drawn" in captured.out  # the colorbars, a standalone source, only
    image = np.asarray(Image.open(out).convert("RGBA"))
    x, y = auto_pip_box(1, 64, 32).center
    assert close(image[int(y), int(x)], (0, 255, 0))  # where in_1 would sit: the bars show through


SCENES = Path(__file__).resolve().parent.parent / "examples" / "scenes-pipeline.yaml"


def rendered(tmp_path: Path, name: str, *options: str) -> np.ndarray:
    out = tmp_path / f"{name}.png"
    assert cli.main(["render", str(SCENES), "--node", "studio", "--out", str(out), *options]) == EXIT_OK
    return np.asarray(Image.open(out).convert("RGBA")).astype(np.float64)


@pytest.mark.gl
def test_scenes_example_renders_scenes_a_nested_card_and_a_transition_midpoint(gl_ctx: moderngl.Context, tmp_path: Path) -> None:
    wide = rendered(tmp_path, "wide")
    split = rendered(tmp_path, "split", "--scene", "split")
    assert not np.array_equal(wide, split)
    # The nested card compositor is drawn into the program: its translucent strip darkens the bars' white patch.
    assert close(wide[10, 100].astype(np.uint8), (191, 191, 191)) and wide[700, 300, :3].min() > 250
    assert wide[672, 300, :3].max() < 120
    # The params' transition is a fade, ease_in_out: at 0.5 it is the mean of both scenes.
    midpoint = rendered(tmp_path, "midpoint", "--to", "split", "--at", "0.5")
    assert np.abs(midpoint - (wide + split) / 2).max() <= 1.0
    # At 0 and 1 the transition is each scene.
    assert np.array_equal(rendered(tmp_path, "start", "--to", "split", "--at", "0"), wide)
    assert np.array_equal(rendered(tmp_path, "end", "--to", "split", "--at", "1"), split)


def test_an_unknown_scene_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "never.png"
    assert cli.main(["render", str(SCENES), "--node", "studio", "--scene", "nope", "--out", str(out)]) == EXIT_BAD_INPUT
    assert "--scene 'nope': studio has no such scene (scenes: wide, pip, split)" in capsys.readouterr().err
    assert cli.main(["render", str(SCENES), "--node", "studio", "--to", "wide", "--at", "2", "--out", str(out)]) == EXIT_BAD_INPUT
    assert not out.exists()
