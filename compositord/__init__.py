"""compositord: a live video compositor daemon.

The distribution's folders map to import names (see pyproject.toml):
``compositord.protocol`` (sans-IO wire protocol and causal rules),
``compositord.client`` (trio client library), ``compositord.daemon`` (the
control process and the engine), ``compositord.cli`` (every command-line
entry point), ``compositord.shaders`` (GLSL files), ``compositord.perf``
(benchmark runner), ``compositord.testing`` (the pytest plugin and test
helpers other projects use).
"""

__version__ = "0.1.0"
