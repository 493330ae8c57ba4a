"""A TCP proxy in front of the daemon whose connections can be cut, as a network drop does.

Shared by the reconnect tests (test_daemon_e2e), the history checker and the soak
benchmark (perf/soak.py): a client dialled through it sees its socket die without a
close handshake.
"""

from __future__ import annotations

import trio


class DroppingProxy:
    """Forwards every accepted connection to ``127.0.0.1:target_port``; ``drop_all`` cuts them all, ``drop_one`` the oldest."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._scopes: dict[trio.CancelScope, None] = {}  # open connections, oldest first
        self.connections = 0  # accepted so far: a reconnect shows as a second one

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._handle, listeners)

    def drop_all(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    def drop_one(self) -> bool:
        """Cut the oldest open connection; False when there is none."""
        if not self._scopes:
            return False
        scope = next(iter(self._scopes))
        del self._scopes[scope]
        scope.cancel()
        return True

    async def _handle(self, downstream: trio.SocketStream) -> None:
        self.connections += 1
        upstream = await trio.open_tcp_stream("127.0.0.1", self.target_port)
        async with downstream, upstream:
            with trio.CancelScope() as scope:
                self._scopes[scope] = None
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._pump, downstream, upstream, nursery.cancel_scope)
                        nursery.start_soon(self._pump, upstream, downstream, nursery.cancel_scope)
                finally:
                    self._scopes.pop(scope, None)

    @staticmethod
    async def _pump(source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope) -> None:
        # Either side going away ends both directions, as a dropped TCP connection would.
        try:
            async for chunk in source:
                await sink.send_all(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()
