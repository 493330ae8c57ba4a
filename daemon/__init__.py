"""The daemon, laid out by its data flow.

``control/`` (HTTP + WebSocket front, connections, hub) -> ``sessions/`` (the
protocol's actions) -> ``state/`` (model and durable store) -> ``engine/``
(render loop, renderer, sources, sinks). ``app`` composes them into one
service; ``config`` holds the settings and ``notify`` speaks to systemd.
"""
