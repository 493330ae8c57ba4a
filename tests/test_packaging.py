"""The wheel works on its own: built from a copy of the checkout, installed into a scratch venv, run from there.

The scratch environment is a plain venv (no system site-packages, so the
editable install of the checkout cannot leak in), the wheel is installed with
``--no-deps --no-index``, and Python runs from an empty directory with
``PYTHONPATH`` unset: ``compositord`` can only come from the wheel. Its
dependencies (moderngl, PyAV, trio...) come from this environment's
site-packages, appended to the scratch venv's ``sys.path`` by a ``.pth``
file: a path listed in a ``.pth`` file is not scanned for ``.pth`` files of
its own, so the editable install's import hook never loads there. From that
venv the installed console script renders the demo scene and serves the
demo pipeline until SIGTERM.
Package data is checked both ways: every file of the checkout that a
``package-data`` pattern of pyproject.toml matches is in the wheel, and the
installed ``importlib.resources`` view of ``compositord.shaders`` has every
``shaders/*.glsl`` of the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import tomllib
import urllib.request
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


def _run(args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=300, env=env, cwd=cwd)
    assert result.returncode == 0, f"{args[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _copy_sources(dest: Path) -> None:
    """Only what the build reads, so the build leaves nothing (build/, *.egg-info) in the shared checkout."""
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, dest / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for folder in sorted(set(PACKAGE_DIRS.values())):
        shutil.copytree(REPO / folder, dest / folder, ignore=ignore)


def _folder_of(package: str) -> Path:
    """The checkout folder of a package: its own package-dir entry, or its nearest mapped parent's subfolder."""
    parts = package.split(".")
    for cut in range(len(parts), 0, -1):
        mapped = ".".join(parts[:cut])
        if mapped in PACKAGE_DIRS:
            return REPO / PACKAGE_DIRS[mapped] / Path(*parts[cut:])
    raise AssertionError(f"{package} is under no package-dir entry")


def _expected_data_files() -> dict[str, list[str]]:
    """Per package, the checkout's files that its package-data patterns match (paths inside the wheel)."""
    expected: dict[str, list[str]] = {}
    for package, patterns in PACKAGE_DATA.items():
        folder = _folder_of(package)
        in_wheel = package.replace(".", "/")
        expected[package] = sorted(
            {
                f"{in_wheel}/{p.relative_to(folder).as_posix()}"
                for pattern in patterns
                for p in folder.glob(pattern)
                if p.is_file()
            }
        )
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


def test_every_subpackage_of_the_checkout_is_listed() -> None:
    """A folder with an ``__init__.py`` under a mapped folder is a package the wheel needs (the
    daemon's ``engine/render`` was once left out, and ``compositord run`` failed from a wheel)."""
    listed = set(SETUPTOOLS["packages"])
    found = set()
    for package, folder in PACKAGE_DIRS.items():
        root = REPO / folder
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(root)
            found.add(".".join([package, *relative.parts]))
    assert found <= listed, f"packages missing from pyproject.toml's list: {sorted(found - listed)}"


def test_wheel_contains_every_package_and_its_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for package in SETUPTOOLS["packages"]:
        assert f"{package.replace('.', '/')}/__init__.py" in names, f"{package} missing from the wheel"
    assert "compositord/protocol/envelope.py" in names and "compositord/protocol/params.py" in names
    glsl_in_checkout = sorted((REPO / PACKAGE_DIRS["compositord.shaders"]).glob("*.glsl"))
    assert PACKAGE_DATA.get("compositord.shaders") and any(p == "*.glsl" for p in PACKAGE_DATA["compositord.shaders"]), (
        "package-data must cover shaders/*.glsl"
    )
    for package, files in _expected_data_files().items():
        missing = [f for f in files if f not in names]
        assert not missing, f"package data of {package} missing from the wheel: {missing}"
    for path in glsl_in_checkout:
        assert f"compositord/shaders/{path.name}" in names


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A scratch venv with the wheel installed, and the environment to run it in."""
    venv = tmp_path_factory.mktemp("wheelvenv") / "venv"
    # A plain venv: without --system-site-packages the checkout's editable install is invisible.
    _run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    _run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], env=env)
    scratch_site = Path(
        _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], env=env).stdout.strip()
    )
    dependency_dirs = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"], *site.getsitepackages()})
    (scratch_site / "zz-compositord-test-dependencies.pth").write_text("".join(d + "\n" for d in dependency_dirs))
    return venv, env


def test_installed_wheel_imports_from_the_scratch_venv(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    python = venv / "bin" / "python"
    empty = tmp_path / "cwd"
    empty.mkdir()
    found = json.loads(_run([str(python), "-c", _PROBE], env=env, cwd=empty).stdout)

    venv_root = venv.resolve()
    assert Path(found["prefix"]).resolve() == venv_root
    assert Path(found["file"]).resolve().is_relative_to(venv_root), f"compositord came from {found['file']}, not the wheel"
    # The dependencies' site-packages may sit inside the checkout (.venv); its source folders may not be on the path.
    source_folders = {REPO.resolve(), *((REPO / folder).resolve() for folder in PACKAGE_DIRS.values())}
    assert not [p for p in found["path"] if p and Path(p).resolve() in source_folders], "the checkout is on sys.path"
    for name, location in found["modules"].items():
        assert Path(location).resolve().is_relative_to(venv_root), f"{name}: {location}"
    glsl_in_checkout = sorted(p.name for p in (REPO / "shaders").glob("*.glsl"))
    assert found["shaders"] == glsl_in_checkout
    assert (venv / "bin" / "compositord").exists(), "the console script is installed"


@pytest.mark.gl
def test_installed_wheel_renders_the_demo_scene(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    scene = tmp_path / "scene"
    # The demo scene looks its assets up beside itself; the wheel ships both as package data.
    shutil.copytree(REPO / "examples", scene, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    out = tmp_path / "frame.png"
    result = _run(
        [str(venv / "bin" / "compositord"), "render", str(scene / "demo-scene.yaml"), "--out", str(out)], env=env, cwd=tmp_path
    )
    assert out.stat().st_size > 10_000, result.stdout
    assert "layers drawn" in result.stdout


@pytest.mark.gl
def test_installed_wheel_serves_and_stops_on_sigterm(installed: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    venv, env = installed
    command = [str(venv / "bin" / "compositord"), "run", "--port", "0", "--state-dir", str(tmp_path / "state")]
    with subprocess.Popen(command, env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True) as daemon:
        assert daemon.stderr is not None
        seen: list[str] = []
        try:
            for line in daemon.stderr:
                seen.append(line)
                if "serving ws://" in line and "/api/v1/control" in line:
                    break
            else:
                pytest.fail(f"the installed daemon ended before serving (exit {daemon.wait()}):\n{''.join(seen)[-3000:]}")
            panel = next((line for line in daemon.stderr if line.startswith(("panel: ", "compositord: serving"))), "")
            if panel.startswith("compositord: serving"):  # the printed line, after the log's
                panel = daemon.stderr.readline()
            assert panel.startswith("panel: http://"), panel
            # The web panel's files are package data: the installed daemon serves them.
            for path in ("", "app.js", "causal.js", "favicon.ico"):
                with urllib.request.urlopen(panel.removeprefix("panel: ").strip() + path, timeout=10) as response:
                    assert response.status == 200 and response.read(), path
            daemon.send_signal(signal.SIGTERM)
            rest = daemon.stderr.read()
            assert daemon.wait(timeout=30) == 0, "".join(seen)[-2000:] + rest[-2000:]
        finally:
            if daemon.poll() is None:
                daemon.kill()
