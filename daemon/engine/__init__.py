"""The engine: a session's render loop, its GL renderer, sources and sinks, and the registry of node kinds."""
