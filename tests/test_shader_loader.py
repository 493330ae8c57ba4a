"""daemon/engine/render/shader_loader.py: stages, #include resolution, errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import moderngl
import pytest

from compositord.daemon.engine.render.shader_loader import ShaderError, ShaderLibrary, compile_program


def write(folder: Path, files: dict[str, str]) -> ShaderLibrary:
    for name, text in files.items():
        (folder / name).write_text(text)
    return ShaderLibrary(folder)


def test_stages_get_version_and_their_define_first(tmp_path: Path) -> None:
    library = write(tmp_path, {"p.glsl": "void main() {}\n"})
    source = library.load("p", defines=("NV12",))
    assert source.vertex.splitlines()[:3] == ["#version 330 core", "#define VERTEX_SHADER", "#define NV12"]
    assert source.fragment.splitlines()[:3] == ["#version 330 core", "#define FRAGMENT_SHADER", "#define NV12"]


def test_includes_are_resolved_recursively_with_line_directives(tmp_path: Path) -> None:
    library = write(
        tmp_path,
        {
            "p.glsl": 'float a;\n#include "b.glsl"\nfloat c;\n',
            "b.glsl": '#include "d.glsl"\nfloat b;\n',
            "d.glsl": "float d;\n",
        },
    )
    source = library.load("p.glsl")
    body = source.vertex.splitlines()[2:]
    assert body == [
        "#line 1 0",
        "float a;",
        "#line 1 1",
        "#line 1 2",
        "float d;",
        "#line 2 1",
        "float b;",
        "#line 3 0",
        "float c;",
    ]
    assert source.files == ("p.glsl", "b.glsl", "d.glsl")


def test_a_file_included_twice_keeps_one_source_number(tmp_path: Path) -> None:
    library = write(tmp_path, {"p.glsl": '#include "h.glsl"\n#include "h.glsl"\n', "h.glsl": "// h\n"})
    assert library.load("p").files == ("p.glsl", "h.glsl")


def test_missing_include_names_the_including_file_and_line(tmp_path: Path) -> None:
    library = write(tmp_path, {"p.glsl": 'float a;\n\n#include "nope.glsl"\n'})
    with pytest.raises(ShaderError, match=r"p\.glsl:3: shader file 'nope\.glsl' not found"):
        library.load("p")


def test_include_cycle_is_an_error(tmp_path: Path) -> None:
    library = write(tmp_path, {"a.glsl": '#include "b.glsl"\n', "b.glsl": '#include "a.glsl"\n'})
    with pytest.raises(ShaderError, match=r"cycle: a\.glsl -> b\.glsl -> a\.glsl"):
        library.load("a")


def test_include_outside_the_shader_folder_is_refused(tmp_path: Path) -> None:
    library = write(tmp_path, {"p.glsl": '#include "../secret.glsl"\n'})
    with pytest.raises(ShaderError, match="plain file names"):
        library.load("p")


def test_driver_locations_are_mapped_to_file_and_line(tmp_path: Path) -> None:
    source = write(tmp_path, {"p.glsl": '#include "h.glsl"\n', "h.glsl": "x\n"}).load("p")
    assert source.map_log("1:7(12): error: `foo' undeclared") == "h.glsl:7: error: `foo' undeclared"  # Mesa
    assert source.map_log("0(3) : error C1008: undefined variable") == "p.glsl:3: error C1008: undefined variable"  # NVIDIA
    assert source.map_log("no location here") == "no location here"


def test_every_shipped_program_loads() -> None:
    library = ShaderLibrary()
    for name in ("layer", "yuv_to_rgba", "rgba_to_yuv"):
        source = library.load(name)
        assert "#include" not in source.vertex


@pytest.mark.gl
def test_compile_error_names_included_file_and_line(gl_ctx: moderngl.Context, tmp_path: Path) -> None:
    library = write(
        tmp_path,
        {
            "broken.glsl": (
                '#include "helpers.glsl"\n'
                "#if defined VERTEX_SHADER\n"
                "void main() { gl_Position = vec4(helper(), 0.0, 1.0); }\n"
                "#else\n"
                "out vec4 color;\n"
                "void main() { color = vec4(1.0); }\n"
                "#endif\n"
            ),
            "helpers.glsl": "// line 1\nvec3 helper() {\n    return undefined_name;\n}\n",
        },
    )
    with pytest.raises(ShaderError) as caught:
        compile_program(gl_ctx, "broken", library=library)
    assert "helpers.glsl:3:" in str(caught.value)
    assert "undefined_name" in str(caught.value)
