"""compositord: a live video compositor daemon.

The distribution's folders map to import names (see pyproject.toml):
``compositord.protocol`` (sans-IO wire protocol and causal rules),
``compositord.client`` (trio client library), ``compositord.daemon`` (server,
store, render loop), ``compositord.shaders`` (GLSL files),
``compositord.perf`` (benchmark runner).
"""

__version__ = "0.1.0"
