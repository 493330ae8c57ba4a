"""protocol/ is sans-IO: importing all of it loads no event loop, no network, no GL.

Checked in a fresh interpreter (this test process has trio and more loaded
already), over every submodule found on disk, so a new module is covered
without editing this test.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = (
    "trio",
    "trio_websocket",
    "wsproto",
    "h11",
    "asyncio",
    "socket",
    "selectors",
    "ssl",
    "moderngl",
    "glcontext",
    "glfw",
    "compositord.daemon",
    "compositord.client",
)

PROTOCOL_DIR = Path(__file__).resolve().parent.parent / "protocol"

_PROBE = """
import importlib, json, pkgutil, sys
{extra}
import compositord.protocol as package
names = sorted("compositord.protocol." + m.name for m in pkgutil.iter_modules(package.__path__))
for name in names:
    importlib.import_module(name)
forbidden = {forbidden!r}
loaded = [m for m in sys.modules if m in forbidden or any(m.startswith(f + ".") for f in forbidden)]
print(json.dumps({{"modules": names, "loaded": sorted(loaded)}}))
"""


def probe(extra: str = "") -> dict[str, list[str]]:
    code = _PROBE.format(extra=extra, forbidden=FORBIDDEN)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def test_protocol_imports_no_io_and_no_gl() -> None:
    found = probe()
    on_disk = sorted(f"compositord.protocol.{p.stem}" for p in PROTOCOL_DIR.glob("*.py") if p.stem != "__init__")
    assert found["modules"] == on_disk, "every protocol module was imported"
    for required in ("envelope", "params", "causal", "errors", "pointer", "frames"):
        assert f"compositord.protocol.{required}" in found["modules"]
    assert found["loaded"] == [], f"protocol/ pulled in {found['loaded']}"


def test_the_probe_sees_a_forbidden_import() -> None:
    # The same probe with one forbidden import added must report it; otherwise the test above proves nothing.
    assert "socket" in probe(extra="import socket")["loaded"]
