"""trio client library for the compositord control protocol.

``open_client(url)`` connects (a new nonce each connection) and reconnects on
its own; ``tune`` stamps and masks edits; ``events()`` yields every event with
the masking rules of PROTOCOL.md section 5 applied; ``shown`` is what a UI
should display for a node.
"""

from compositord.client.connection import Client, ClientOptions, ClientStatistics, open_client
from compositord.client.errors import (
    ClientClosed,
    ClientError,
    CompositordError,
    ConnectFailed,
    ConnectionLost,
    RequestTimedOut,
    UnexpectedResponse,
)
from compositord.client.events import RESYNCED, ClientEvent
from compositord.client.session_state import SessionStates

__all__ = [
    "RESYNCED",
    "Client",
    "ClientClosed",
    "ClientError",
    "ClientEvent",
    "ClientOptions",
    "ClientStatistics",
    "CompositordError",
    "ConnectFailed",
    "ConnectionLost",
    "RequestTimedOut",
    "SessionStates",
    "UnexpectedResponse",
    "open_client",
]
