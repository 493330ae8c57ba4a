"""Shared fixtures.

``start_loop``: starts render loops on a test's own sessions (``await start_loop(session, recorder)``), each
after its first frame (the test is skipped, saying why, when no OpenGL 3.3 context can be made), and stops them
all when the test ends; ``tmp_path`` is their asset directory.

``gl_ctx``: one headless EGL context per test session (made lazily, only when
a GL test runs), made current around each test and checked for
``GL_NO_ERROR`` before and after it, as moderngl's own test suite does. A GL
test is skipped only when no OpenGL 3.3 context can be made at all, with the
reason from the context factory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio


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


@pytest.fixture
async def start_loop(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    from compositord.daemon.engine.loop import RenderLoop
    from compositord.tests.sink_helpers import wait_first_frame_or_skip

    loops: list[RenderLoop] = []

    async def start(session: Any, recorder: Any) -> RenderLoop:
        loop = RenderLoop(session, recorder, trio_token=trio.lowlevel.current_trio_token(), asset_dir=tmp_path)
        loops.append(loop)
        loop.start()
        await wait_first_frame_or_skip(loop)
        return loop

    yield start
    for loop in loops:
        loop.stop()
