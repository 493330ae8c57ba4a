"""A refused request and the reply it gets: the error, and the stamps it carried (rule S6)."""

from __future__ import annotations

from dataclasses import dataclass, field

from compositord.protocol import envelope
from compositord.protocol.causal import Stamp
from compositord.protocol.errors import ErrorCode, RemoteProtocolError


@dataclass
class Refusal(Exception):
    """A refused request, with the stamps it carried (rule S6: each counts as processed)."""

    error: RemoteProtocolError
    stamps: list[tuple[str, Stamp]] = field(default_factory=list)  # (node_id, stamp)

    def response(self, correlation_id: str | None) -> envelope.Response:
        """The error reply: the last stamp as ``_sender``/``_rev``, every stamp in ``refused`` when several."""
        if not self.stamps:
            return envelope.error_response(self.error, correlation_id)
        node_id, stamp = self.stamps[-1]
        refused = self.stamps if len(self.stamps) > 1 else ()
        return envelope.error_response(self.error, correlation_id, stamp, node_id=node_id, refused=refused)


def not_found(what: str, path: str) -> RemoteProtocolError:
    return RemoteProtocolError(ErrorCode.NOT_FOUND, f"{path}: {what}", path)


def disk_full() -> RemoteProtocolError:
    """A change the store could not commit (``StoreFull``): refused, and taken back wherever it was shown.

    ``resource_limit`` rather than ``internal``: nothing is broken, the daemon runs on and the same change
    can succeed once the operator frees space. The message names no path on the server."""
    return RemoteProtocolError(
        ErrorCode.RESOURCE_LIMIT,
        "not stored: the disk under the daemon's store is full, so this change was taken back (events say what is"
        " stored); try again once the operator has freed space",
    )
