"""deploy/compositord.service: `systemd-analyze verify` prints nothing, and
the unit keeps the promises of ARCHITECTURE.md (notify, watchdog, hardening)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest

UNIT_TEXT = resources.files("compositord.deploy").joinpath("compositord.service").read_text()


def unit_settings(text: str) -> dict[str, list[str]]:
    """Key -> every value it is given (systemd keys may repeat), across sections."""
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def local_exec_start() -> str:
    """The installed entry point next to this Python, so verify finds a real file."""
    script = Path(sys.executable).parent / "compositord"
    if script.is_file():
        return f"{script} run"
    return f"{sys.executable} -m compositord run"


def test_unit_keeps_the_promised_settings() -> None:
    settings = unit_settings(UNIT_TEXT)
    expected = {
        "Type": "notify",
        "ExecStart": "/usr/bin/compositord run",
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "StateDirectory": "compositord",
        "ProtectSystem": "strict",
        "NoNewPrivileges": "yes",
    }
    for key, value in expected.items():
        assert settings.get(key) == [value], key
    for key in ("WatchdogSec", "TimeoutStopSec"):
        assert len(settings.get(key, [])) == 1, key
    # Mesa's llvmpipe JITs shaders into W+X memory: this must stay off.
    assert "MemoryDenyWriteExecute" not in settings


@pytest.fixture
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze not installed")
    return path


@pytest.fixture
def local_unit(tmp_path: Path) -> Path:
    text, count = re.subn(r"(?m)^ExecStart=/usr/bin/compositord run$", f"ExecStart={local_exec_start()}", UNIT_TEXT)
    assert count == 1
    path = tmp_path / "compositord.service"
    path.write_text(text)
    return path


def test_systemd_analyze_verify_prints_nothing(systemd_analyze: str, local_unit: Path) -> None:
    # Unknown keys and bad values are only warnings with exit status 0: any output fails the test.
    result = subprocess.run([systemd_analyze, "verify", str(local_unit)], capture_output=True, text=True, timeout=60)
    assert result.stderr == ""
    assert result.returncode == 0


def test_hardening_exposure_is_low(systemd_analyze: str, local_unit: Path) -> None:
    result = subprocess.run(
        [systemd_analyze, "security", "--offline=true", "--no-pager", str(local_unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for compositord\.service: ([0-9.]+)", result.stdout)
    if match is None and "offline" in result.stderr:
        pytest.skip("this systemd-analyze has no --offline security scoring")
    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= 2.0
