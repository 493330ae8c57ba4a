"""The control process's front: HTTP and WebSocket connections, outgoing frames, the hub that fans events out."""
