"""The wheel works on its own: built from a copy of the checkout, installed into a scratch venv, imported from there.

The scratch environment is a plain venv (no system site-packages, so the
editable install of the checkout cannot leak in), the wheel is installed with
``--no-deps --no-index``, and Python runs from an empty directory with
``PYTHONPATH`` unset: ``compositord`` can only come from the wheel.
Package data is checked both ways: every file of the checkout that a
``package-data`` pattern of pyproject.toml matches is in the wheel, and the
installed ``importlib.resources`` view of ``compositord.shaders`` has every
``shaders/*.glsl`` of the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

# Builds a wheel and a venv: about 6 s here, so not marked slow.

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIRS: dict[str, str] = SETUPTOOLS["package-dir"]
PACKAGE_DATA: dict[str, list[str]] = SETUPTOOLS.get("package-data", {})

_PROBE = """
import importlib, importlib.resources, json, sys
import compositord, compositord.protocol
modules = {}
for name in ("compositord.protocol.envelope", "compositord.protocol.params", "compositord.protocol.causal"):
    try:
        modules[name] = importlib.import_module(name).__file__
    except ImportError as exc:
        modules[name] = "ImportError: " + str(exc)
shaders = sorted(p.name for p in importlib.resources.files("compositord.shaders").iterdir() if p.name.endswith(".glsl"))
print(json.dumps({"file": compositord.__file__, "prefix": sys.prefix, "modules": modules, "shaders": shaders, "path": sys.path}))
"""


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{args[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _copy_sources(dest: Path) -> None:
    """Only what the build reads, so the build leaves nothing (build/, *.egg-info) in the shared checkout."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    # A package folder inside another (daemon/panel in daemon) comes with its parent.
    for folder in sorted(set(PACKAGE_DIRS.values())):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore, dirs_exist_ok=True)


def _expected_data_files() -> dict[str, list[str]]:
    """Per package, the checkout's files that its package-data patterns match (paths inside the wheel)."""
    expected: dict[str, list[str]] = {}
    for package, patterns in PACKAGE_DATA.items():
        folder = REPO / PACKAGE_DIRS[package]
        in_wheel = package.replace(".", "/")
        expected[package] = sorted({f"{in_wheel}/{p.relative_to(folder).as_posix()}" for pattern in patterns for p in folder.glob(pattern) if p.is_file()})
    return expected


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheelbuild")
    source = work / "src"
    source.mkdir()
    _copy_sources(source)
    out = work / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # --no-isolation: build with this environment's setuptools/wheel (the test extra), offline.
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(out), str(source)], env=env, cwd=work)
    wheels = list(out.glob("compositord-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_contains_every_package_and_its_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in PACKAGE_DIRS:
        assert f"{package.replace('.', '/')}/__init__.py" in names, f"{package} missing from the wheel"
    assert "compositord/protocol/envelope.py" in names and "compositord/protocol/params.py" in names
    glsl_in_checkout = sorted((REPO / PACKAGE_DIRS["compositord.shaders"]).glob("*.glsl"))
    assert PACKAGE_DATA.get("compositord.shaders") and any(p == "*.glsl" for p in PACKAGE_DATA["compositord.shaders"]), "package-data must cover shaders/*.glsl"
    for package, files in _expected_data_files().items():
        missing = [f for f in files if f not in names]
        assert not missing, f"package data of {package} missing from the wheel: {missing}"
    for path in glsl_in_checkout:
        assert f"compositord/shaders/{path.name}" in names


def test_installed_wheel_imports_from_the_scratch_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # A plain venv: without --system-site-packages the checkout's editable install is invisible.
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], env=env)
    empty = tmp_path / "cwd"
    empty.mkdir()
    found = json.loads(_run([str(python), "-c", _PROBE], env=env, cwd=empty).stdout)

    venv_root = venv.resolve()
    assert Path(found["prefix"]).resolve() == venv_root
    assert Path(found["file"]).resolve().is_relative_to(venv_root), f"compositord came from {found['file']}, not the wheel"
    assert not any(str(REPO) == p or p.startswith(str(REPO) + os.sep) for p in found["path"]), "the checkout is on sys.path"
    for name, location in found["modules"].items():
        assert Path(location).resolve().is_relative_to(venv_root), f"{name}: {location}"
    glsl_in_checkout = sorted(p.name for p in (REPO / "shaders").glob("*.glsl"))
    assert found["shaders"] == glsl_in_checkout
    assert (venv / "bin" / "compositord").exists(), "the console script is installed"
