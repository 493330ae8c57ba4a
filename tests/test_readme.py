"""The README's commands work as written: each one it shows is run here, through ``./scripts/dev``.

The commands are read out of the README itself, so a command added there and
not run here fails ``test_every_command_of_the_readme_is_run``. Where a
command needs a running daemon (``ctl``), the daemon is the one
``./scripts/dev run`` starts, on a free port and a scratch state directory
(``COMPOSITORD_URL`` points ``ctl`` at it); a command that writes a file
writes it under the test's temporary directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text(encoding="utf-8")
DEV = str(REPO / "scripts" / "dev")


def _shell_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[str]:
    """Each line of a shell block without its trailing comment (`#` after two spaces)."""
    lines = [re.split(r"\s{2,}#", line)[0].strip() for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


SET_UP = _commands(_shell_blocks(README)[0])
USING = _commands(next(block for block in _shell_blocks(README) if "compositord ctl sessions" in block))


def _environment(url: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO / ".venv")))
    if url is not None:
        env["COMPOSITORD_URL"] = url
    return env


def _exec(command: str, *, url: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DEV, "exec", *shlex.split(command)], cwd=REPO, env=_environment(url), capture_output=True, text=True, timeout=timeout
    )


def test_the_readme_opens_with_the_two_set_up_commands() -> None:
    assert SET_UP == ["./scripts/dev run", "./scripts/dev test"]
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "./scripts/dev test" in ci, "CI runs the README's test command"


def test_dev_exec_runs_inside_the_virtual_environment() -> None:
    """``./scripts/dev exec python`` and ``./scripts/dev exec compositord`` are the venv's, as the README says."""
    probe = _exec('python -c \'import os, sys; print(sys.prefix); print(os.environ.get("VIRTUAL_ENV", ""))\'')
    assert probe.returncode == 0, probe.stderr
    prefix, virtual_env = probe.stdout.split()
    assert Path(prefix).resolve() == (REPO / ".venv").resolve()
    assert Path(virtual_env).resolve() == (REPO / ".venv").resolve()
    found = _exec("compositord --help")
    assert found.returncode == 0 and "usage: compositord" in found.stdout, found.stderr


@pytest.fixture(scope="module")
def daemon_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The daemon as the README's first command starts it (``./scripts/dev run``), on a free port."""
    state = tmp_path_factory.mktemp("readme-state")
    command = [DEV, "run", "--port", "0", "--state-dir", str(state)]
    with subprocess.Popen(command, cwd=REPO, env=_environment(), stderr=subprocess.PIPE, text=True) as daemon:
        assert daemon.stderr is not None
        seen: list[str] = []
        url = None
        for line in daemon.stderr:
            seen.append(line)
            found = re.search(r"serving (ws://\S+/api/v1/control)", line)
            if found:
                url = found.group(1)
                break
        if url is None:
            pytest.fail(f"./scripts/dev run ended before serving (exit {daemon.wait()}):\n{''.join(seen)[-3000:]}")
        try:
            yield url
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                assert daemon.wait(timeout=30) == 0
            finally:
                if daemon.poll() is None:
                    daemon.kill()


def test_ctl_sessions_get_and_tune(daemon_url: str) -> None:
    sessions = _exec(_using("compositord ctl sessions"), url=daemon_url)
    assert sessions.returncode == 0, sessions.stderr
    assert "demo" in sessions.stdout
    tune_line = _using("compositord ctl tune demo compositor")
    tuned = _exec(tune_line, url=daemon_url)
    assert tuned.returncode == 0, tuned.stderr
    got = _exec(_using("compositord ctl get demo"), url=daemon_url)
    assert got.returncode == 0, got.stderr
    pipeline = json.loads(got.stdout)
    patch = json.loads(shlex.split(tune_line)[-1])
    layer = pipeline["nodes"]["compositor"]["params"]["layers"]["in_1"]
    assert layer["rect"] == patch["layers"]["in_1"]["rect"]


def test_ctl_watch_prints_events_as_json_lines(daemon_url: str) -> None:
    command = [DEV, "exec", *shlex.split(_using("compositord ctl watch demo"))]
    with subprocess.Popen(command, cwd=REPO, env=_environment(daemon_url), stdout=subprocess.PIPE, text=True) as watcher:
        assert watcher.stdout is not None
        try:
            tuned = _exec('compositord ctl tune demo compositor \'{"layers": {"in_1": {"opacity": 0.5}}}\'', url=daemon_url)
            assert tuned.returncode == 0, tuned.stderr
            event = json.loads(watcher.stdout.readline())
            assert event["session_id"] == "demo" and isinstance(event["event"], str)
        finally:
            watcher.send_signal(signal.SIGINT)
            watcher.wait(timeout=30)
    assert watcher.returncode == 0  # Ctrl-C is how a watch ends


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctl_watch_ends_on_a_signal_while_its_reader_has_stopped_reading(daemon_url: str, stop: signal.Signals) -> None:
    # A reader that stops reading (a pager, a full pipe) blocks the watch's writes; a signal must still end it.
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)  # full after a few events
    command = [DEV, "exec", *shlex.split(_using("compositord ctl watch demo"))]
    try:
        with subprocess.Popen(command, cwd=REPO, env=_environment(daemon_url), stdout=write_end) as watcher:
            os.close(write_end)
            write_end = -1
            try:
                # Tune until the pipe stops filling: the watch's next line no longer fits, so its write blocks.
                deadline, waiting, unchanged = time.monotonic() + 60, -1, 0
                while unchanged < 3:
                    assert time.monotonic() < deadline, f"the pipe still fills after 60 s ({waiting} bytes)"
                    tuned = _exec(
                        'compositord ctl tune demo compositor \'{"layers": {"in_1": {"opacity": 0.7}}}\'', url=daemon_url
                    )
                    assert tuned.returncode == 0, tuned.stderr
                    time.sleep(0.2)
                    now_waiting = _bytes_waiting(read_end)
                    unchanged = unchanged + 1 if now_waiting == waiting and waiting > 0 else 0
                    waiting = now_waiting
                time.sleep(0.5)
                watcher.send_signal(stop)
                assert watcher.wait(timeout=15) == 0
            finally:
                if watcher.poll() is None:
                    watcher.kill()
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)


def _bytes_waiting(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def test_check_config_accepts_the_example() -> None:
    checked = _exec(_using("compositord check-config"))
    assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.gl
def test_render_writes_the_demo_frame(tmp_path: Path) -> None:
    line = _using("compositord render")
    out = tmp_path / "frame.png"
    rendered = _exec(line.replace("--out frame.png", f"--out {out}"))
    assert rendered.returncode == 0, rendered.stderr
    assert out.stat().st_size > 10_000


def test_bench_command_parses_and_a_quick_run_finishes() -> None:
    line = _using("compositord bench")
    ran = _exec(f"{line} --quick --frames 2", timeout=300)
    assert ran.returncode == 0, ran.stdout[-2000:] + ran.stderr[-2000:]
    assert "BENCH" in ran.stdout


def test_python_dash_m_is_the_same_command() -> None:
    assert "python -m compositord ..." in USING
    ran = _exec("python -m compositord --help")
    assert ran.returncode == 0 and "usage: compositord" in ran.stdout


def test_every_command_of_the_readme_is_run() -> None:
    """A command the README adds to its "Using it" block needs a test here."""
    covered = (
        "compositord run [",
        "compositord ctl sessions",
        "compositord ctl get demo",
        "compositord ctl tune demo compositor",
        "compositord ctl watch demo",
        "compositord check-config",
        "compositord render",
        "compositord bench",
        "python -m compositord ...",
    )
    assert [line for line in USING if not line.startswith(covered)] == []


def _using(prefix: str) -> str:
    found = [line for line in USING if line.startswith(prefix)]
    assert len(found) == 1, f"the README's 'Using it' block should show one {prefix!r}: {found}"
    return found[0]


def test_the_run_synopsis_names_options_run_accepts() -> None:
    synopsis = _using("compositord run [")
    helped = subprocess.run(
        [sys.executable, "-m", "compositord", "run", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    for option in re.findall(r"--[a-z-]+", synopsis):
        assert option in helped.stdout, f"{option} is in the README but not in `compositord run --help`"
