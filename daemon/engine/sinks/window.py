"""``sink::window``: a GLFW window that shows the output.

The window lives on the sink's own thread with its own GL context (GLFW/GLX);
the render thread keeps its EGL context and never sees the window. The frame
the render thread read back is uploaded here (an EGL context cannot share
textures with a GLFW one, and this way the render thread runs without a display):
RGBA output as it is, YUV output converted to RGB by libswscale first, then
drawn scaled to the window. GLFW is not thread-safe, so every GLFW call of
every window sink goes through one process-wide lock. Closing the window is
an error state of the node ("closed"); sending its params again reopens it.
Without a display (no ``$DISPLAY``) the node reports that and shows nothing.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from compositord.daemon.engine.sinks import convert
from compositord.daemon.engine.sinks.base import Sink, SinkError, SinkFrame

_GLFW_LOCK = threading.Lock()
_glfw_users = 0

_VERTEX = """
#version 330 core
in vec2 position;
out vec2 uv;
void main() {
    // rows arrive top to bottom; GL textures start at the bottom row
    uv = vec2((position.x + 1.0) * 0.5, (1.0 - position.y) * 0.5);
    gl_Position = vec4(position, 0.0, 1.0);
}
"""
_FRAGMENT = """
#version 330 core
uniform sampler2D frame;
in vec2 uv;
out vec4 colour;
void main() { colour = vec4(texture(frame, uv).rgb, 1.0); }
"""


class WindowSink(Sink):
    kind = "sink::window"
    queue_capacity = 2
    keep_latest = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._window: Any = None
        self._ctx: Any = None
        self._texture: Any = None
        self._quad: Any = None
        self._capture_request = threading.Event()
        self._captured: np.ndarray | None = None
        self._capture_done = threading.Event()

    # ---- for tests and diagnostics: the window's own pixels, read back on the window thread

    def capture(self, timeout: float = 5.0) -> np.ndarray | None:
        """The window's framebuffer ((h, w, 3) RGB, top row first) after the next drawn frame."""
        self._capture_done.clear()
        self._capture_request.set()
        if not self._capture_done.wait(timeout):
            return None
        return self._captured

    # ---- worker thread

    def open(self, first: SinkFrame) -> None:
        global _glfw_users
        if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
            raise SinkError("no display: set DISPLAY (or run under Xvfb) to show a window")
        import glfw
        import moderngl

        frame = first.frame
        width = int(self.params.get("width") or frame.width)
        height = int(self.params.get("height") or frame.height)
        with _GLFW_LOCK:
            if _glfw_users == 0 and not glfw.init():
                raise SinkError(f"GLFW cannot start on display {os.environ.get('DISPLAY')!r}: {glfw.get_error()}")
            _glfw_users += 1
            glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
            glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
            glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
            glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
            self._window = glfw.create_window(width, height, str(self.params.get("title", "compositord")), None, None)
            if not self._window:
                _glfw_users -= 1
                if _glfw_users == 0:
                    glfw.terminate()
                raise SinkError(f"GLFW could not open a {width}x{height} window: {glfw.get_error()}")
            glfw.make_context_current(self._window)
            glfw.swap_interval(0)  # never wait for vsync: the queue paces us
        self._ctx = moderngl.create_context()
        program = self._ctx.program(vertex_shader=_VERTEX, fragment_shader=_FRAGMENT)
        vertices = self._ctx.buffer(np.array([-1, -1, 1, -1, -1, 1, 1, 1], dtype="f4").tobytes())
        self._quad = self._ctx.vertex_array(program, [(vertices, "2f", "position")])

    def write(self, item: SinkFrame) -> None:
        import glfw

        frame = item.frame
        if frame.pixel_format == "rgba8":
            pixels, components = frame.data, 4
        else:
            pixels, components = convert.to_rgb(frame).tobytes(), 3
        size = (frame.width, frame.height)
        if self._texture is None or self._texture.size != size or self._texture.components != components:
            if self._texture is not None:
                self._texture.release()
            self._texture = self._ctx.texture(size, components)
            self._texture.filter = (self._ctx.LINEAR, self._ctx.LINEAR)
            self._texture.repeat_x = self._texture.repeat_y = False  # clamp: the edges must not blend in the opposite edge
        self._texture.write(pixels)
        with _GLFW_LOCK:
            glfw.poll_events()
            if glfw.window_should_close(self._window):
                raise SinkError("the window was closed; send the node's params again to reopen it")
            width, height = glfw.get_framebuffer_size(self._window)
        self._ctx.screen.use()
        self._ctx.viewport = (0, 0, width, height)
        self._texture.use(0)
        self._quad.render(self._ctx.TRIANGLE_STRIP)
        if self._capture_request.is_set():
            raw = self._ctx.screen.read(viewport=(0, 0, width, height), components=3)
            self._captured = np.frombuffer(raw, dtype=np.uint8).reshape(height, width, 3)[::-1].copy()
            self._capture_request.clear()
            self._capture_done.set()
        with _GLFW_LOCK:
            glfw.swap_buffers(self._window)

    def finish(self) -> None:
        global _glfw_users
        if self._window is None:
            return
        import glfw

        for item in (self._quad, self._texture):
            if item is not None:
                item.release()
        if self._ctx is not None:
            self._ctx.release()
        with _GLFW_LOCK:
            # glfw's stubs omit None, which GLFW documents as detaching the thread's current context
            glfw.make_context_current(None)  # type: ignore[arg-type]
            glfw.destroy_window(self._window)
            self._window = None
            _glfw_users -= 1
            if _glfw_users == 0:
                glfw.terminate()
