"""Who owns a ``_sender`` nonce: the connection that used it first, for as long as its acks matter.

Every event broadcasts the stamps it acknowledges, so any client can read
another client's nonce. Without an owner, client B could stamp a tune with
A's nonce and ``_rev`` 2^53: refused or not, rule S6 would advance A's ack
to 2^53 and every later tune of A would be a ``conflict`` (a replay); and
B's close would retire A's acks (S5) while A is still connected. So a nonce
belongs to the connection that used it first; a stamp with a nonce that
another connection owns gets ``conflict`` at its ``_sender`` and changes
nothing (no params, no ack). When the owner closes, the nonce stays taken
for the retired-acks grace (rule S7: its acks are still in ``getpipeline``
for a reconnecting client to decide what it re-sends), so nobody can move
them meanwhile.

Bounded: a connection owns at most :data:`MAX_SENDERS_PER_CONNECTION`
nonces, and at most ``max_retired`` closed ones are remembered (the oldest
forgotten first).
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable

from compositord.daemon.control.connection import Connection
from compositord.protocol import causal, pointer
from compositord.protocol.errors import ErrorCode, RemoteProtocolError

# A client makes one nonce per connection, so a few per connection is plenty (PROTOCOL.md section 1).
MAX_SENDERS_PER_CONNECTION = 16
MAX_RETIRED_SENDERS = 65536


class SenderOwners:
    def __init__(
        self,
        *,
        grace_s: float = causal.RETIRED_ACKS_GRACE_S,
        max_retired: int = MAX_RETIRED_SENDERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._owners: dict[str, Connection] = {}
        self._retired: collections.OrderedDict[str, float] = collections.OrderedDict()  # nonce -> when its owner closed
        self._grace_s = grace_s
        self._max_retired = max_retired
        self._clock = clock

    def owner(self, sender: str) -> Connection | None:
        return self._owners.get(sender)

    def foreign(self, connection: Connection, sender: str) -> str | None:
        """Why ``connection`` may not use ``sender`` (another connection owns it, or owned it until lately), or None."""
        owner = self._owners.get(sender)
        if owner is not None:
            return None if owner is connection else "another connection uses this _sender"
        closed_at = self._retired.get(sender)
        if closed_at is not None and self._clock() - closed_at < self._grace_s:
            return "a closed connection used this _sender; its acks are still reported (rule S7): make a new nonce"
        return None

    def claim(self, connection: Connection, senders: Iterable[tuple[str, str]]) -> None:
        """Take every ``(sender, pointer of its _sender)`` for ``connection``, or raise and take none.

        ``conflict`` at the pointer of a nonce another connection owns; ``bad_envelope`` when the
        connection would own more than :data:`MAX_SENDERS_PER_CONNECTION`.
        """
        new: dict[str, str] = {}
        for sender, path in senders:
            why = self.foreign(connection, sender)
            if why is not None:
                raise RemoteProtocolError(ErrorCode.CONFLICT, f"{path}: {why}; nothing was changed", path)
            if sender not in connection.senders:
                new.setdefault(sender, path)
        if len(connection.senders) + len(new) > MAX_SENDERS_PER_CONNECTION:
            path = next(iter(new.values()))
            raise RemoteProtocolError(
                ErrorCode.BAD_ENVELOPE,
                f"{path}: more than {MAX_SENDERS_PER_CONNECTION} distinct _sender values on one connection",
                path,
            )
        for sender in new:
            self._owners[sender] = connection
            self._retired.pop(sender, None)
            connection.senders.add(sender)

    def release(self, connection: Connection) -> set[str]:
        """The connection closed: its nonces (returned, for S5) stay taken for the grace, then are free."""
        now = self._clock()
        released = {sender for sender in connection.senders if self._owners.get(sender) is connection}
        for sender in released:
            del self._owners[sender]
            self._retired[sender] = now
            self._retired.move_to_end(sender)
        while self._retired and (
            len(self._retired) > self._max_retired or now - next(iter(self._retired.values())) >= self._grace_s
        ):
            self._retired.popitem(last=False)
        return released


def sender_path(body_path: str) -> str:
    """The pointer of the ``_sender`` in a tune's message body."""
    return pointer.join(body_path, causal.SENDER_KEY)
