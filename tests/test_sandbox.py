"""The path gate (daemon.sandbox) for sink outputs, and the params schema's half of it.

No GL, no daemon: every case is a file-system layout and the answer the gate
gives for it (~0.1 s). The same refusals through the render loop and the
daemon: tests/test_sink_sandbox.py."""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

import pytest

from compositord.daemon.config import Settings
from compositord.daemon.engine.sandbox import SandboxError, resolve_input, resolve_output
from compositord.protocol import params
from compositord.protocol.errors import RemoteProtocolError


@pytest.fixture
def outputs(tmp_path: Path) -> Path:
    root = tmp_path / "outputs"
    (root / "sub").mkdir(parents=True)
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    directory = tmp_path / "outside"
    directory.mkdir()
    (directory / "victim.txt").write_text("keep me")
    return directory


def test_a_relative_path_resolves_inside_and_writes_nothing(outputs: Path) -> None:
    target = resolve_output(outputs, "sub/out.mp4")
    assert target.path == (outputs / "sub" / "out.mp4").resolve() and not target.is_fifo
    assert not target.path.exists()  # resolving creates nothing but the output directory itself


def test_the_output_directory_is_made_on_demand(tmp_path: Path) -> None:
    root = tmp_path / "state" / "outputs"
    assert resolve_output(root, "out.y4m").path == root.resolve() / "out.y4m"
    assert root.is_dir()


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/etc/passwd", "absolute paths are refused"),
        ("/tmp/out.mp4", "absolute paths are refused"),
        ("../out.mp4", "'..' is refused"),
        ("sub/../../out.mp4", "'..' is refused"),
        ("sub/..", "'..' is refused"),
        ("", "non-empty"),
        ("sub\\out.mp4", "backslash"),
        ("out\x00.mp4", "NUL"),
        ("missing-dir/out.mp4", "no such directory in the output directory"),
        ("sub", "is a directory"),
    ],
)
def test_paths_that_leave_or_miss_the_directory_are_refused(outputs: Path, path: str, reason: str) -> None:
    with pytest.raises(SandboxError, match=reason):
        resolve_output(outputs, path)


def test_no_output_directory_refuses_every_path() -> None:
    with pytest.raises(SandboxError, match="no output directory is configured"):
        resolve_output(None, "out.mp4")


def test_links_out_of_the_directory_are_refused(outputs: Path, outside: Path) -> None:
    (outputs / "bashrc").symlink_to(outside / "victim.txt")  # an existing file outside
    (outputs / "dangling.mp4").symlink_to(outside / "new.mp4")  # a file the write would create outside
    (outputs / "dir-link").symlink_to(outside, target_is_directory=True)  # a directory on the way
    (outputs / "sub" / "up").symlink_to("../..")  # relative link climbing out
    for path in ("bashrc", "dangling.mp4", "dir-link/victim.txt", "dir-link/new.mp4", "sub/up/x.mp4"):
        with pytest.raises(SandboxError, match="a link leads out of the output directory"):
            resolve_output(outputs, path)
    assert (outside / "victim.txt").read_text() == "keep me" and not (outside / "new.mp4").exists()


def test_links_that_stay_inside_are_followed(outputs: Path) -> None:
    (outputs / "sub" / "real.y4m").write_bytes(b"")
    (outputs / "alias.y4m").symlink_to("sub/real.y4m")
    assert resolve_output(outputs, "alias.y4m").path == (outputs / "sub" / "real.y4m").resolve()


def test_device_files_are_refused_linked_or_made_inside(outputs: Path) -> None:
    (outputs / "full.y4m").symlink_to("/dev/full")
    with pytest.raises(SandboxError, match="a link leads out"):
        resolve_output(outputs, "full.y4m")
    try:
        os.mknod(outputs / "null.y4m", stat.S_IFCHR | 0o600, os.makedev(1, 3))  # a /dev/null twin inside
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD (root)")
    with pytest.raises(SandboxError, match="device files and sockets are refused"):
        resolve_output(outputs, "null.y4m")


def test_an_output_directory_under_dev_is_still_refused() -> None:
    with pytest.raises(SandboxError, match="device and kernel files"):
        resolve_output("/dev", "full")


def test_an_operators_fifo_inside_is_allowed_one_outside_is_not(outputs: Path, outside: Path) -> None:
    os.mkfifo(outputs / "live.y4m")
    target = resolve_output(outputs, "live.y4m")
    assert target.is_fifo and target.path == (outputs / "live.y4m").resolve()
    os.mkfifo(outside / "pipe")
    (outputs / "elsewhere.y4m").symlink_to(outside / "pipe")
    with pytest.raises(SandboxError, match="a link leads out"):
        resolve_output(outputs, "elsewhere.y4m")


def test_a_hard_link_to_a_file_outside_is_not_overwritten(outputs: Path, outside: Path) -> None:
    os.link(outside / "victim.txt", outputs / "victim.mp4")
    with pytest.raises(SandboxError, match="other hard links"):
        resolve_output(outputs, "victim.mp4")
    (outputs / "own.mp4").write_bytes(b"old recording")
    assert resolve_output(outputs, "own.mp4").path == (outputs / "own.mp4").resolve()  # overwriting its own file is fine


def test_assets_and_outputs_share_the_gate(tmp_path: Path) -> None:
    with pytest.raises(
        SandboxError, match=re.escape("asset_path '../x.png': '..' is refused; name a file inside the asset directory")
    ):
        resolve_input(tmp_path, "../x.png")
    with pytest.raises(
        SandboxError, match=re.escape("path '../x.mp4': '..' is refused; name a file inside the output directory")
    ):
        resolve_output(tmp_path, "../x.mp4")


# ----------------------------------------------------------------------------- the schema's half: invalid_params


@pytest.mark.parametrize(
    ("kind", "bad", "field"),  # field: the error's JSON pointer inside params
    [
        ("sink::file", {"path": "/home/user/.bashrc.mp4"}, "/path"),
        ("sink::file", {"path": "../escape.mkv"}, "/path"),
        ("sink::y4m", {"path": "/dev/full"}, "/path"),
        ("sink::y4m", {"path": "a/../../b.y4m"}, "/path"),
        ("sink::y4m", {"path": "C:x.y4m"}, "/path"),
        ("sink::stream", {"url": "file:/tmp/out.ts"}, "/url"),
        ("sink::stream", {"url": "file:///tmp/out.ts"}, "/url"),
        ("sink::stream", {"url": "pipe:1"}, "/url"),
    ],
)
def test_the_schema_refuses_paths_out_of_the_output_dir(kind: str, bad: dict, field: str) -> None:
    with pytest.raises(RemoteProtocolError) as refused:
        params.validate(kind, bad)
    assert refused.value.code == "invalid_params"
    assert [e.path for e in refused.value.errors] == [field], refused.value.errors


@pytest.mark.parametrize(("kind", "good"), [("sink::y4m", {"path": "raw/out.y4m"}), ("sink::file", {"path": "rec/day-1.mkv"})])
def test_the_schema_keeps_relative_paths(kind: str, good: dict) -> None:
    assert params.validate(kind, good) == good


def test_stdout_is_for_one_shot_use_and_never_a_default() -> None:
    assert "path" not in params.with_defaults("sink::y4m", {}), "no durable stdout default"
    with pytest.raises(RemoteProtocolError) as missing:
        params.validate("sink::y4m", {})
    assert [(e.path, e.message) for e in missing.value.errors] == [("/path", "required")]
    with pytest.raises(RemoteProtocolError) as refused:
        params.validate("sink::y4m", {"path": "-"})
    assert [e.path for e in refused.value.errors] == ["/path"]
    assert "one-shot" in refused.value.errors[0].message
    assert params.validate("sink::y4m", {"path": "-"}, context=params.ONE_SHOT) == {"path": "-"}


def test_output_dir_setting_defaults_into_the_state_dir(tmp_path: Path) -> None:
    import argparse

    from compositord.cli import run as cli_run

    parser = argparse.ArgumentParser()
    cli_run.add_arguments(parser)
    assert Settings.from_args(parser.parse_args(["--state-dir", str(tmp_path)]), {}).output_dir == tmp_path / "outputs"
    chosen = Settings.from_args(parser.parse_args(["--state-dir", str(tmp_path), "--output-dir", "/srv/rec"]), {})
    assert chosen.output_dir == Path("/srv/rec")
    assert Settings(state_dir=tmp_path).output_dir == tmp_path / "outputs"  # also when built directly (tests, perf)
