"""Shared fixtures.

``gl_ctx``: one headless EGL context per test session (made lazily, only when
a GL test runs), made current around each test and checked for
``GL_NO_ERROR`` before and after it, as moderngl's own test suite does. A GL
test is skipped only when no OpenGL 3.3 context can be made at all, with the
reason from the context factory.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


@pytest.fixture(scope="session")
def _gl_session_context() -> Iterator[Any]:
    from compositord.daemon.engine.render.gl_context import GLContextError, create_context

    try:
        ctx = create_context()
    except GLContextError as exc:
        yield exc
        return
    yield ctx
    ctx.release()


@pytest.fixture
def gl_ctx(_gl_session_context: Any) -> Iterator[Any]:
    if isinstance(_gl_session_context, Exception):
        pytest.skip(f"no OpenGL 3.3 context: {_gl_session_context}")
    ctx = _gl_session_context
    # Another context may have been made current in this thread (a test that runs the
    # render command makes its own): each check makes ours current first.
    with ctx:
        assert ctx.error == "GL_NO_ERROR", "GL error left over before the test"
        yield ctx
        with ctx:
            assert ctx.error == "GL_NO_ERROR", "the test left a GL error"
