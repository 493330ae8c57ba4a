"""Asset sandbox (image overlays, image sources, font files) and the GL context factory's errors."""

from __future__ import annotations

import os
from pathlib import Path

import moderngl
import numpy as np
import pytest
from PIL import Image

from compositord.daemon.engine.render import gl_context
from compositord.daemon.engine.render.images import AssetError, load_overlay, premultiply, resolve_asset


@pytest.fixture
def assets(tmp_path: Path) -> Path:
    root = tmp_path / "assets"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(np.full((4, 6, 4), 200, dtype=np.uint8)).save(root / "sub" / "ok.png")
    (tmp_path / "outside.png").write_bytes((root / "sub" / "ok.png").read_bytes())
    return root


def test_a_file_inside_resolves(assets: Path) -> None:
    assert resolve_asset(assets, "sub/ok.png") == (assets / "sub" / "ok.png").resolve()


@pytest.mark.parametrize(
    ("asset_path", "reason"),
    [
        ("/etc/passwd", "absolute"),
        ("../outside.png", "'..'"),
        ("sub/../../outside.png", "'..'"),
        ("sub/missing.png", "no such file"),
        ("sub", "not a regular file"),
        ("", "non-empty"),
        ("sub\\ok.png", "backslash"),
    ],
)
def test_paths_out_of_the_asset_dir_are_refused(assets: Path, asset_path: str, reason: str) -> None:
    with pytest.raises(AssetError, match=reason):
        resolve_asset(assets, asset_path)


def test_a_link_out_of_the_asset_dir_is_refused(assets: Path) -> None:
    (assets / "escape.png").symlink_to(assets.parent / "outside.png")
    (assets / "dir_link").symlink_to(assets.parent)
    with pytest.raises(AssetError, match="link leads out"):
        resolve_asset(assets, "escape.png")
    with pytest.raises(AssetError, match="link leads out"):
        resolve_asset(assets, "dir_link/outside.png")


def test_a_link_inside_the_asset_dir_is_fine(assets: Path) -> None:
    (assets / "alias.png").symlink_to(assets / "sub" / "ok.png")
    assert resolve_asset(assets, "alias.png") == (assets / "sub" / "ok.png").resolve()


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="needs /dev/null")
def test_device_files_are_refused_even_from_an_asset_dir_under_dev(tmp_path: Path) -> None:
    with pytest.raises(AssetError, match=r"device and kernel files|not a regular file"):
        resolve_asset("/dev", "null")
    with pytest.raises(AssetError, match=r"device and kernel files|not a regular file"):
        resolve_asset("/proc/self", "status")


def test_no_asset_dir_configured(assets: Path) -> None:
    with pytest.raises(AssetError, match="no asset directory"):
        resolve_asset(None, "sub/ok.png")


def test_an_undecodable_file_is_a_clear_error(assets: Path) -> None:
    (assets / "junk.png").write_bytes(b"not an image")
    with pytest.raises(AssetError, match=r"junk\.png: cannot decode"):
        load_overlay(assets, "junk.png")


def test_overlays_are_premultiplied_and_decoded_again_when_the_file_changes(assets: Path) -> None:
    first = load_overlay(assets, "sub/ok.png")
    assert first is load_overlay(assets, "sub/ok.png")  # cached
    assert tuple(first[0, 0]) == (157, 157, 157, 200)  # 200 * 200 / 255 rounded
    Image.fromarray(np.zeros((2, 2, 4), dtype=np.uint8)).save(assets / "sub" / "ok.png")
    os.utime(assets / "sub" / "ok.png", ns=(1, 1))
    assert load_overlay(assets, "sub/ok.png").shape == (2, 2, 4)


def test_premultiply_rounds_to_nearest() -> None:
    pixel = np.array([[[255, 128, 1, 128]]], dtype=np.uint8)
    assert tuple(premultiply(pixel)[0, 0]) == (128, 64, 1, 128)


def test_missing_egl_library_names_it_and_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gl_context.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(
        gl_context.GLContextError, match=r"libEGL\.so\.1.*apt-get install libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri"
    ):
        gl_context.create_context()


def test_bad_device_variable_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gl_context.DEVICE_ENV_VAR, "first")
    with pytest.raises(gl_context.GLContextError, match="COMPOSITORD_EGL_DEVICE='first'"):
        gl_context.create_context()


@pytest.mark.gl
def test_device_index_from_the_environment_is_used(gl_ctx: moderngl.Context, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(gl_context.DEVICE_ENV_VAR, "999")
    with pytest.raises(gl_context.GLContextError, match="EGL device 999"):
        gl_context.create_context()
    monkeypatch.setenv(gl_context.DEVICE_ENV_VAR, "0")
    ctx = gl_context.create_context()
    try:
        assert ctx.version_code >= 330 and ctx.gc_mode == "context_gc"
    finally:
        ctx.release()
