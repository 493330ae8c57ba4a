"""Pipeline files, the embedded demo pipeline, `check-config`, and settings."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

from compositord.cli import main as cli_main
from compositord.daemon.config import (
    ConfigError,
    Settings,
    default_state_dir,
    demo_pipeline,
    load_pipeline,
    session_name_for,
)
from compositord.protocol.params import validate_pipeline

EXAMPLES = resources.files("compositord.examples")


def packaged(name: str) -> Path:
    path = Path(str(EXAMPLES.joinpath(name)))
    assert path.is_file(), name
    return path


@pytest.mark.parametrize("name", ["example-pipeline.toml", "example-pipeline.yaml"])
def test_examples_pass_check_config(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check-config", str(packaged(name))]) == 0
    assert capsys.readouterr().out == "ok\n"


def test_toml_and_yaml_examples_are_the_same_pipeline() -> None:
    toml = load_pipeline(packaged("example-pipeline.toml"))
    yaml = load_pipeline(packaged("example-pipeline.yaml"))
    assert toml == yaml
    assert toml["nodes"]["compositor"]["params"]["layers"]["in_1"]["rect"] == {"x": 820, "y": 40, "width": 420, "height": 236}


def test_check_config_prints_every_error_with_its_path(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "nodes:\n"
        "  comp: {kind: 'video::compositor', params: {width: 0, fps: 999, bogus: 1}}\n"
        "  what: {kind: 'video::nope'}\n"
        "connections:\n"
        "  - {from_node: ghost, from_pin: out, to_node: comp, to_pin: in_0}\n"
    )
    assert cli_main(["check-config", str(bad)]) == 1
    lines = capsys.readouterr().out.splitlines()
    paths = [line.split(": ")[1] for line in lines]
    assert paths == [
        "/nodes/comp/params/width",
        "/nodes/comp/params/fps",
        "/nodes/comp/params/bogus",
        "/nodes/what/kind",
        "/connections/0/from_node",
    ]
    assert all(line.startswith(f"{bad}: ") for line in lines)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("broken.toml", "nodes = [\n", "not valid TOML"),
        ("broken.yaml", "nodes: {a: [\n", "not valid YAML"),
        ("pipeline.json", "{}", "unknown file type '.json'"),
        ("list.yaml", "- 1\n- 2\n", "expected an object"),
    ],
)
def test_unusable_files_are_reported_at_the_root(tmp_path: Path, name: str, text: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    assert [e.path for e in caught.value.errors] == [""]
    assert message in caught.value.errors[0].message


def test_missing_file_is_an_error_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["check-config", str(tmp_path / "nothing.toml")]) == 1
    assert "cannot read the file" in capsys.readouterr().out


def test_python_dash_m_entry_point_runs_check_config() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "compositord", "check-config", str(packaged("example-pipeline.toml"))],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr


def test_demo_pipeline_has_background_auto_pip_input_and_title() -> None:
    demo = demo_pipeline()
    assert validate_pipeline(demo) == demo  # normalized already
    into = {c["to_pin"]: c["from_node"] for c in demo["connections"] if c["to_node"] == "compositor"}
    background, pip = demo["nodes"][into["in_0"]], demo["nodes"][into["in_1"]]
    assert background["kind"] == pip["kind"] == "video::colorbars"
    assert background["params"]["pattern"] != pip["params"]["pattern"]
    assert (background["params"]["width"], background["params"]["height"]) != (pip["params"]["width"], pip["params"]["height"])
    compositor = demo["nodes"]["compositor"]["params"]
    assert "in_1" not in compositor.get("layers", {})  # no layer entry: auto-PiP
    assert [o["text"] for o in compositor["text_overlays"]] == ["compositord"]
    demo["nodes"].clear()
    assert demo_pipeline()["nodes"], "demo_pipeline() must hand out a fresh copy"
    assert session_name_for(None) == "demo"
    assert session_name_for("/etc/compositord/studio.toml") == "studio"


def test_state_dir_precedence() -> None:
    assert default_state_dir("/x", {"STATE_DIRECTORY": "/var/lib/compositord"}) == Path("/x")
    assert default_state_dir(None, {"STATE_DIRECTORY": "/var/lib/compositord:/var/lib/other"}) == Path("/var/lib/compositord")
    assert default_state_dir(None, {}) == Path("state")


def test_settings_from_run_options_and_environment() -> None:
    args = argparse.Namespace(config="p.yaml", host="0.0.0.0", port=0, state_dir=None)
    env = {"STATE_DIRECTORY": "/srv/c", "COMPOSITORD_TOKEN": "s3cret", "COMPOSITORD_ALLOWED_ORIGINS": "http://a, http://b"}
    settings = Settings.from_args(args, env)
    assert (settings.host, settings.port) == ("0.0.0.0", 0)
    assert settings.state_dir == Path("/srv/c")
    assert settings.asset_dir == Path("/srv/c/assets")
    assert settings.pipeline_file == Path("p.yaml")
    assert settings.token == "s3cret" and "s3cret" not in repr(settings)
    assert settings.allowed_origins == frozenset({"http://a", "http://b"})
    defaults = Settings.from_args(argparse.Namespace(), {})
    assert (defaults.host, defaults.port, defaults.token, defaults.pipeline_file) == ("127.0.0.1", 4545, None, None)
    with pytest.raises(AttributeError):
        defaults.port = 1  # type: ignore[misc]  # assigning a frozen field on purpose: the test shows it fails


def _run_args(argv: list[str]) -> argparse.Namespace:
    from compositord.cli import run

    parser = argparse.ArgumentParser()
    run.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    ("flag", "value", "field"),
    [
        ("--engine-park-after", "0", "park_after_failures"),
        ("--engine-memory-mb", "-5", "memory_budget_mb"),
        ("--engine-park-window", "0", "park_window_s"),
    ],
)
def test_engine_settings_out_of_range_are_refused_by_name(flag: str, value: str, field: str) -> None:
    args = _run_args([flag, value])
    with pytest.raises(ValueError, match=f"engine.{field}"):
        Settings.from_args(args, environ={})


def test_engine_settings_from_the_command_line_and_the_environment() -> None:
    args = _run_args(["--engine-memory-mb", "512", "--allow-listen-host", "0.0.0.0"])
    settings = Settings.from_args(args, environ={"COMPOSITORD_ENGINE_MODE": "thread"})
    assert settings.engine.mode == "thread" and settings.engine.memory_budget_mb == 512
    assert "0.0.0.0" in settings.engine.listen_hosts and "127.0.0.1" in settings.engine.listen_hosts
    assert Settings.from_args(_run_args([]), environ={}).engine.mode == "process"
