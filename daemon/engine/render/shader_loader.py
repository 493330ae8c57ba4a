"""GLSL programs from package data: ``#include`` resolved, errors mapped to file and line.

Each program is one ``shaders/NAME.glsl`` file holding both stages behind
``#if defined VERTEX_SHADER`` / ``#elif defined FRAGMENT_SHADER``. The loader
prepends ``#version 330 core`` and the stage's ``#define`` (plus any variant
defines), and replaces every ``#include "other.glsl"`` line by that file.

Every file gets a GLSL source-string number, and ``#line LINE NUMBER``
directives keep the compiler's line numbers true to each file, so a driver
message such as ``2:14(7): error: ...`` (Mesa) or ``2(14) : error ...``
(NVIDIA) is reported as ``color.glsl:14: error: ...``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from importlib.abc import Traversable
from importlib.resources import files
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import moderngl

GLSL_VERSION = "#version 330 core"
_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')
_DEFINE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Mesa: "0:12(5): error: ..."; NVIDIA: "0(12) : error C0000: ..."; AMD/others: "ERROR: 0:12: ..."
_LOCATIONS = (
    re.compile(r"\b(\d+):(\d+)\(\d+\)"),
    re.compile(r"\b(\d+)\((\d+)\)"),
    re.compile(r"\b(\d+):(\d+):"),
)


class ShaderError(Exception):
    """A shader could not be loaded or compiled; the message names file and line."""


@dataclass(frozen=True)
class ShaderSource:
    """Both stages of one program, and the file name of each source-string number."""

    name: str
    vertex: str
    fragment: str
    files: tuple[str, ...]

    def map_log(self, log: str) -> str:
        """Rewrite driver locations ``N:LINE`` as ``file.glsl:LINE``."""
        out_lines = []
        for line in log.splitlines():
            out_lines.append(self._map_line(line))
        return "\n".join(out_lines)

    def _map_line(self, line: str) -> str:
        for pattern in _LOCATIONS:
            match = pattern.search(line)
            if match is None:
                continue
            index, number = int(match.group(1)), int(match.group(2))
            if 0 <= index < len(self.files):
                return f"{self.files[index]}:{number}: {line[match.end() :].lstrip(' :')}"
        return line


class ShaderLibrary:
    """Loads program sources from a package folder (``compositord.shaders`` by default), once each."""

    def __init__(self, root: Traversable | None = None) -> None:
        self._root = root if root is not None else files("compositord.shaders")
        self._texts: dict[str, str] = {}

    def _read(self, name: str, included_from: str | None) -> str:
        if name not in self._texts:
            if "/" in name or "\\" in name or name.startswith("."):
                raise ShaderError(f"{included_from or name}: shader names are plain file names, got {name!r}")
            resource = self._root.joinpath(name)
            if not resource.is_file():
                where = f"{included_from}: " if included_from else ""
                raise ShaderError(f"{where}shader file {name!r} not found")
            self._texts[name] = resource.read_text(encoding="utf-8")
        return self._texts[name]

    def load(self, name: str, defines: Iterable[str] = ()) -> ShaderSource:
        """The vertex and fragment sources of program ``name`` (``"layer"`` or ``"layer.glsl"``)."""
        file_name = name if name.endswith(".glsl") else f"{name}.glsl"
        extra = list(defines)
        for define in extra:
            if not _DEFINE_NAME.fullmatch(define):
                raise ShaderError(f"{file_name}: bad define {define!r}")
        file_table: list[str] = [file_name]
        body = self._expand(file_name, file_table, stack=(), included_from=None)
        stages = []
        for stage in ("VERTEX_SHADER", "FRAGMENT_SHADER"):
            header = [GLSL_VERSION, f"#define {stage}", *(f"#define {define}" for define in extra)]
            stages.append("\n".join(header) + "\n" + body)
        return ShaderSource(file_name, stages[0], stages[1], tuple(file_table))

    def _expand(self, name: str, file_table: list[str], stack: tuple[str, ...], included_from: str | None) -> str:
        if name in stack:
            chain = " -> ".join((*stack, name))
            raise ShaderError(f"{included_from}: #include cycle: {chain}")
        text = self._read(name, included_from)
        index = file_table.index(name)
        out = [f"#line 1 {index}"]
        for number, line in enumerate(text.splitlines(), start=1):
            match = _INCLUDE.match(line)
            if match is None:
                out.append(line)
                continue
            target = match.group(1)
            if target not in file_table:
                file_table.append(target)
            out.append(self._expand(target, file_table, (*stack, name), f"{name}:{number}"))
            out.append(f"#line {number + 1} {index}")
        return "\n".join(out)


_default_library: ShaderLibrary | None = None


def default_library() -> ShaderLibrary:
    global _default_library
    if _default_library is None:
        _default_library = ShaderLibrary()
    return _default_library


def compile_program(
    ctx: moderngl.Context,
    name: str,
    defines: Iterable[str] = (),
    library: ShaderLibrary | None = None,
    fragment_outputs: Mapping[str, int] | None = None,
) -> moderngl.Program:
    """Compile and link program ``name``; a compile or link error becomes :class:`ShaderError`."""
    import moderngl

    source = (library or default_library()).load(name, defines)
    try:
        return ctx.program(
            vertex_shader=source.vertex,
            fragment_shader=source.fragment,
            fragment_outputs=dict(fragment_outputs) if fragment_outputs else None,
        )
    except moderngl.Error as exc:
        variant = f" ({', '.join(defines)})" if defines else ""
        raise ShaderError(f"{source.name}{variant}: compile failed:\n{source.map_log(str(exc))}") from exc


def uniform(program: moderngl.Program, name: str) -> moderngl.Uniform:
    """The uniform ``name`` of ``program`` (``program[name]`` may also be an attribute, a varying or a block)."""
    import moderngl

    member = program[name]
    assert isinstance(member, moderngl.Uniform), f"{name!r} is a {type(member).__name__}, not a uniform"
    return member
