"""No code in daemon/ or client/ reaches into a library's private attributes or modules (ARCHITECTURE.md).

Code that writes through trio-websocket's ``_stream`` and ``_stream_lock`` or frames with wsproto's
undocumented ``frame_protocol`` can break silently at any upgrade of either, and rules out TLS. This
test reads every module's syntax tree and fails, naming file and line, on:

- ``obj._stream``, ``obj._stream_lock``, ``obj._wsproto`` (and ``getattr(obj, "_stream")``...) where
  ``obj`` is not ``self`` / ``cls`` (a class's own private attributes are its business);
- an import of a private module of another distribution (``trio_websocket._impl``, ``trio._core``), or
  of wsproto's ``frame_protocol``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCANNED = ("daemon", "client")
PRIVATE_ATTRIBUTES = {"_stream", "_stream_lock", "_wsproto"}
UNDOCUMENTED_MODULES = {"frame_protocol"}
OWN_PACKAGES = {"compositord"}


def private_access(source: str, filename: str = "<source>") -> list[str]:
    """Every private access in ``source``, as ``file:line: what``."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            owner = node.value
            if not (isinstance(owner, ast.Name) and owner.id in ("self", "cls")):
                found.append(f"{filename}:{node.lineno}: .{node.attr} of {ast.unparse(owner)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "setattr", "hasattr"):
            if len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and node.args[1].value in PRIVATE_ATTRIBUTES:
                found.append(f"{filename}:{node.lineno}: {node.func.id}(..., {node.args[1].value!r})")
        elif isinstance(node, ast.Import):
            found += [f"{filename}:{node.lineno}: import of {a.name}" for a in node.names if _private_module(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and _private_module(node.module):
            found.append(f"{filename}:{node.lineno}: import from {node.module}")
    return found


def _private_module(name: str) -> bool:
    """A module of another distribution that is not its public API (relative imports are our own)."""
    parts = name.split(".")
    if parts[0] in OWN_PACKAGES:
        return False
    return any(part.startswith("_") for part in parts[1:]) or bool(UNDOCUMENTED_MODULES & set(parts))


def test_daemon_and_client_use_only_public_library_api() -> None:
    files = sorted(path for folder in SCANNED for path in (ROOT / folder).rglob("*.py"))
    assert len(files) > 20, "the scan found the source folders"
    found = [hit for path in files for hit in private_access(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))]
    assert found == [], "private access of another library:\n" + "\n".join(found)


@pytest.mark.parametrize(
    "source",
    [
        "os.write(websocket._stream.socket.fileno(), data)",
        "websocket._stream_lock.locked()",
        "self._websocket._stream.send_all(b'')",
        "connection._wsproto.send(event)",
        "stream = getattr(websocket, '_stream', None)",
        "from wsproto.frame_protocol import FrameProtocol",
        "import wsproto.frame_protocol",
        "from trio_websocket._impl import WebSocketConnection",
        "from trio._core import checkpoint",
    ],
)
def test_the_scan_sees_each_kind_of_private_access(source: str) -> None:
    assert private_access(source), f"not seen: {source}"


@pytest.mark.parametrize(
    "source",
    [
        "self._stream = stream",
        "self._stream.time_base",  # a class's own attribute (the encoder sink keeps a PyAV stream)
        "cls._stream_lock = None",
        "from wsproto.events import TextMessage",
        "from compositord.daemon.control._internal import x",
        "from ._helpers import y",
        "websocket.stream.socket.fileno()",
    ],
)
def test_the_scan_leaves_own_and_public_access_alone(source: str) -> None:
    assert private_access(source) == []
