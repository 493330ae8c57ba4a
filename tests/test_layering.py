"""The folders import each other only along the data flow (docs/ARCHITECTURE.md, docs/INTERNALS.md).

A message enters at ``daemon/control``, becomes an action in ``daemon/sessions``,
is stored by ``daemon/state`` and rendered by ``daemon/engine``. The control
side reaches the engine only through its seam, ``daemon.engine.api``; the
engine never reaches back into the control side. ``protocol`` is the
sans-IO base everyone may use and that uses no one; the client library is
built on the protocol alone.

Every ``import`` statement of every module is read (``ast``, so imports inside
functions count too: a lazy import is still a dependency), and each rule names
the importing module and what it may not import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE_DIRS: dict[str, str] = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"][
    "package-dir"
]

ENGINE_SEAM = "compositord.daemon.engine.api"
# What carries the seam between the control process and an engine process: the socket's framing and the
# shared-memory slots. Plain data and the standard library, like the seam, so the control side may import
# them too (its engine client, daemon/control/engine_client.py, speaks them).
ENGINE_SEAM_TRANSPORT = ("compositord.daemon.engine.wire", "compositord.daemon.engine.frame_slots")
CONTROL_SIDE = ("compositord.daemon.control", "compositord.daemon.sessions", "compositord.daemon.state")


@dataclass(frozen=True)
class Import:
    importer: str
    imported: str
    line: int


def _module_name(package: str, folder: Path, path: Path) -> str:
    parts = list(path.relative_to(folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def _all_imports() -> list[Import]:
    found: list[Import] = []
    for package, folder_name in PACKAGE_DIRS.items():
        folder = REPO / folder_name
        for path in folder.rglob("*.py"):
            if "__pycache__" in path.parts or (package == "compositord" and path.parent != folder and path.parent.name != "cli"):
                continue
            module = _module_name(package, folder, path)
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    found += [Import(module, alias.name, node.lineno) for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    # `from compositord.daemon.engine import loop` imports the submodule `loop`.
                    found += [Import(module, f"{node.module}.{alias.name}", node.lineno) for alias in node.names]
    return found


IMPORTS = _all_imports()


def _within(name: str, *prefixes: str) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in prefixes)


def _violations(importers: tuple[str, ...], forbidden: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    return sorted(
        f"{item.importer} (line {item.line}) imports {item.imported}"
        for item in IMPORTS
        if _within(item.importer, *importers) and _within(item.imported, *forbidden) and not _within(item.imported, *allowed)
    )


def test_the_reader_finds_the_imports_it_checks() -> None:
    # Guards the rules below against passing vacuously: each folder's known imports are seen.
    pairs = {(item.importer, item.imported) for item in IMPORTS}
    assert any(_within(a, "compositord.daemon.sessions") and _within(b, "compositord.daemon.state") for a, b in pairs)
    assert any(_within(a, "compositord.daemon.engine") and _within(b, "compositord.daemon.engine.render") for a, b in pairs)
    assert any(_within(a, "compositord.client") and _within(b, "compositord.protocol") for a, b in pairs)


def test_the_protocol_imports_nothing_else_of_the_project() -> None:
    assert _violations(("compositord.protocol",), ("compositord",), allowed=("compositord.protocol",)) == []


def test_the_client_library_is_built_on_the_protocol_alone() -> None:
    assert _violations(("compositord.client",), ("compositord",), allowed=("compositord.client", "compositord.protocol")) == []


def test_the_control_side_reaches_the_engine_only_through_its_seam() -> None:
    assert _violations(CONTROL_SIDE, ("compositord.daemon.engine",), allowed=(ENGINE_SEAM, *ENGINE_SEAM_TRANSPORT)) == []


def test_the_engine_never_imports_the_control_side() -> None:
    forbidden = (*CONTROL_SIDE[:2], "compositord.daemon.app", "compositord.cli", "compositord.client")
    assert _violations(("compositord.daemon.engine",), forbidden) == []


@pytest.mark.parametrize("module", [ENGINE_SEAM, *ENGINE_SEAM_TRANSPORT])
def test_the_engine_seam_is_plain_data(module: str) -> None:
    """What crosses to an engine process, and how, is defined without GL, media or trio."""
    imported = {item.imported for item in IMPORTS if item.importer == module}
    assert imported, f"{module} has no imports to check: has it moved?"
    assert not [name for name in imported if _within(name, "moderngl", "glfw", "av", "trio", "numpy", "PIL")]
    seam = (ENGINE_SEAM, *ENGINE_SEAM_TRANSPORT)
    assert not [name for name in imported if _within(name, "compositord.daemon.engine") and not _within(name, *seam)]


def test_the_state_knows_nothing_of_connections_or_engines() -> None:
    forbidden = ("compositord.daemon.control", "compositord.daemon.sessions", "compositord.daemon.engine")
    assert _violations(("compositord.daemon.state",), forbidden) == []


def test_nothing_shipped_imports_the_test_suite() -> None:
    shipped = ("compositord.protocol", "compositord.client", "compositord.daemon", "compositord.perf", "compositord.testing")
    assert _violations(shipped, ("compositord.tests",)) == []


@pytest.mark.parametrize(
    "module",
    ["compositord.daemon.app", "compositord.daemon.control.server", "compositord.daemon.sessions", "compositord.cli.ctl"],
)
def test_the_control_process_loads_no_gl_and_no_media(module: str) -> None:
    """Checked in a fresh interpreter: importing what the control process runs loads neither GL nor PyAV."""
    probe = (
        f"import importlib, sys; importlib.import_module({module!r}); "
        "print(sorted(m for m in ('moderngl', 'glfw', 'av', 'glcontext') if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "[]", f"{module} loads {result.stdout.strip()}"
