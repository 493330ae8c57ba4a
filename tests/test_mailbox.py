"""The per-connection mailbox: coalescing of whole-state events, order, bound, close."""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import pytest
import trio
import trio.testing

from compositord.daemon.control.hub import Hub
from compositord.daemon.control.mailbox import Mailbox, MailboxClosed, MailboxFull
from compositord.daemon.control.outgoing import Outgoing, text_of
from compositord.daemon.control.rate_limit import TokenBucket


def drain(mailbox: Mailbox) -> list[str]:
    out = []
    while True:
        try:
            out.append(text_of(mailbox.get_nowait()))
        except trio.WouldBlock:
            return out


def test_latest_event_replaces_unsent_one_of_same_key() -> None:
    box = Mailbox()
    box.put_coalescing(("s", "comp", "view"), "view-1")
    box.put_coalescing(("s", "comp", "view"), "view-2")
    box.put_coalescing(("s", "comp", "params"), "params-1")
    box.put_coalescing(("s", "comp", "view"), "view-3")
    assert drain(box) == ["params-1", "view-3"]
    assert box.coalesced == 2


def test_replacement_never_overtakes_an_ordered_message_queued_before_it() -> None:
    box = Mailbox()
    box.put_coalescing(("s", "pip", "params"), "params-old")
    box.put("noderemoved pip")
    box.put("nodeadded pip")
    box.put_coalescing(("s", "pip", "params"), "params-new")
    assert drain(box) == ["noderemoved pip", "nodeadded pip", "params-new"]


def test_ordered_messages_are_all_kept_in_order() -> None:
    box = Mailbox()
    for i in range(100):
        box.put(f"m{i}")
    assert drain(box) == [f"m{i}" for i in range(100)]


def test_bound_raises_mailbox_full_but_replacing_never_does() -> None:
    box = Mailbox(capacity=3)
    box.put("a")
    box.put_coalescing("k", "k1")
    box.put("b")
    box.put_coalescing("k", "k2")  # replaces: the count stays 3
    with pytest.raises(MailboxFull):
        box.put("c")
    with pytest.raises(MailboxFull):
        box.put_coalescing("other", "x")
    assert drain(box) == ["a", "b", "k2"]


async def test_get_waits_for_a_put_and_close_ends_it() -> None:
    box = Mailbox()
    got: list[str] = []

    async def consumer() -> None:
        try:
            while True:
                got.append(text_of(await box.get()))
        except MailboxClosed:
            got.append("<closed>")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        await trio.testing.wait_all_tasks_blocked()
        box.put("one")
        await trio.testing.wait_all_tasks_blocked()
        box.put("two")
        box.close()
        box.put("after close is ignored")
    assert got == ["one", "two", "<closed>"]


class _Subscriber:
    def __init__(self, capacity: int) -> None:
        self.mailbox = Mailbox(capacity)
        self.closed_because: str | None = None

    def close_for_policy(self, reason: str) -> None:
        self.closed_because = reason

    def deliver(self, messages: Sequence[tuple[Hashable | None, Outgoing]]) -> None:
        self.mailbox.put_all(messages)


def test_hub_delivers_to_every_subscriber_and_drops_a_full_one() -> None:
    hub = Hub()
    fast, slow = _Subscriber(100), _Subscriber(1)
    hub.subscribe(fast)
    hub.subscribe(slow)
    hub.publish("e1")
    hub.publish("e2")
    assert slow.closed_because is not None and "too slow" in slow.closed_because
    assert len(hub) == 1
    hub.publish("e3", coalesce_key="k")
    hub.publish("e4", coalesce_key="k")
    assert drain(fast.mailbox) == ["e1", "e2", "e4"]
    assert drain(slow.mailbox) == ["e1"]


def test_token_bucket_allows_the_rate_and_refuses_beyond_it() -> None:
    now = [0.0]
    bucket = TokenBucket(10, clock=lambda: now[0])
    assert sum(bucket.try_take() for _ in range(20)) == 10
    now[0] += 0.5
    assert sum(bucket.try_take() for _ in range(20)) == 5
    now[0] += 100.0  # the burst is capped
    assert sum(bucket.try_take() for _ in range(20)) == 10


def test_the_bytes_waiting_behind_the_next_message_are_bounded_too() -> None:
    box = Mailbox(capacity=100, max_bytes=1000)
    box.put("h" * 5000)  # the next message to write: larger than the bound, never a reason to close
    box.put("a" * 600)
    box.put_coalescing(("s", "n", "params"), "p" * 300)
    box.put_coalescing(("s", "n", "params"), "q" * 400)  # replaces the 300: 1,000 wait behind the next message
    assert box.queued_bytes == 6000
    with pytest.raises(MailboxFull, match="bytes waiting"):
        box.put("b")
    with pytest.raises(MailboxFull):
        box.put_coalescing(("s", "n", "params"), "r" * 401)  # a replacement that grows past the bound
    assert drain(box)[0] == "h" * 5000 and box.queued_bytes == 0
    box.put("c" * 999)
    box.put("d" * 1000)
    box.get_nowait()
    box.put("e" * 1000)  # room again once the sender took the next message
    assert box.queued_bytes == 2000
