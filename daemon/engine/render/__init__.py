"""GPU compositing: scene resolution (pure Python), GLSL passes and the renderer.

Only the render thread imports the GL parts (gl_context, renderer, *_pass);
``scene`` and ``frames`` are plain data and safe anywhere.
"""
