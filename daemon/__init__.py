"""The daemon: trio WebSocket server, durable store, render loops, sources and sinks."""
