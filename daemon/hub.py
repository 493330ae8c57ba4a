"""Fan-out of events to every connection's mailbox, each event encoded once.

Every connection sees every session (PROTOCOL.md section 4: nothing is
suppressed on the server; clients decide), so the hub is a set of subscribers.
A subscriber whose mailbox overflows is told to close (1008) and removed; the
others are not slowed down by it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Protocol

from compositord.daemon.mailbox import Mailbox, MailboxFull


class Subscriber(Protocol):
    mailbox: Mailbox

    def close_for_policy(self, reason: str) -> None:
        """Close the connection with 1008 soon; must not block."""


class Hub:
    def __init__(self) -> None:
        self._subscribers: set[Subscriber] = set()
        self.published = 0

    def __len__(self) -> int:
        return len(self._subscribers)

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.add(subscriber)

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def subscribers(self) -> list[Subscriber]:
        return list(self._subscribers)

    def publish(self, text: str, coalesce_key: Hashable | None = None) -> None:
        """Queue an already encoded event for every subscriber.

        ``coalesce_key`` (for example ``(session_id, node_id, "view")``) marks a
        whole-state event that may replace an unsent one with the same key.
        """
        self.published += 1
        for subscriber in list(self._subscribers):
            try:
                if coalesce_key is None:
                    subscriber.mailbox.put(text)
                else:
                    subscriber.mailbox.put_coalescing(coalesce_key, text)
            except MailboxFull as exc:
                self._subscribers.discard(subscriber)
                subscriber.close_for_policy(f"too slow: {exc}")
