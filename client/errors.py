"""What the client library raises: one domain exception per way a call can fail."""

from __future__ import annotations

from compositord.protocol.causal import Stamp
from compositord.protocol.envelope import ErrorReply
from compositord.protocol.errors import FieldError


class ClientError(Exception):
    """Base of every exception of compositord.client."""


class CompositordError(ClientError):
    """The server answered a request with an ``error`` response (PROTOCOL.md section 2)."""

    def __init__(
        self,
        code: str,
        message: str,
        path: str | None = None,
        errors: tuple[FieldError, ...] = (),
        stamp: Stamp | None = None,
        node_id: str | None = None,
    ) -> None:
        located = f" (at {path})" if path and path not in message else ""
        super().__init__(f"{code}: {message}{located}")
        self.code = code
        self.message = message
        self.path = path
        self.errors = errors
        self.stamp = stamp
        self.node_id = node_id

    @classmethod
    def from_reply(cls, reply: ErrorReply) -> CompositordError:
        return cls(reply.code, reply.message, reply.path, reply.errors, reply.stamp, reply.node_id)


class ConnectionLost(ClientError):
    """The connection dropped before the answer came: the request may or may not have been applied.

    A tune's value stays masked and is re-sent after the reconnect (when the
    client re-sends pending values, the default).
    """


class ConnectFailed(ClientError):
    """No connection could be opened; ``status`` is the HTTP status of a refused handshake (401, 403, 404, 503)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ClientClosed(ClientError):
    """The client was closed (or gave up reconnecting) before or during the call."""


class UnexpectedResponse(ClientError):
    """The server answered with a response this request does not expect."""


class RequestTimedOut(ClientError):
    """No answer (or no connection to send on) within ``request_timeout``; the request may still be applied."""
