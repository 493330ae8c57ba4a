"""The session logic against hostile peers and exhausted resources (hardening issue #14, second half):
nonces that belong to their connection, budgets on every action, a full disk under the store.

The engine is the recording stand-in of tests/test_sessions.py (no GL)."""

from __future__ import annotations

import trio

from compositord.tests import test_sessions
from compositord.tests.test_sessions import Harness, connected

harness = test_sessions.harness  # the same fixture: a session "s1" behind a real server, engines recorded

BIG_REV = 2**53


async def wait_forgotten(harness: Harness, sender: str) -> None:
    with trio.fail_after(5):
        while sender not in harness.loops["s1"].forgotten:
            await trio.sleep(0.01)


async def test_a_nonce_belongs_to_the_connection_that_used_it_first(harness: Harness) -> None:
    async with connected(harness) as alice:
        assert await alice.tune("comp", {"fps": 20, "_sender": "alice", "_rev": 1}) == {"action": "success"}
        async with connected(harness) as mallory:
            # Valid params, a refused tune (S6 would advance the ack) and a malformed request: none moves alice's ack.
            for body in ({"fps": 21}, {"fps": -1}, {"fps": 21, "bogus": True}):
                reply = await mallory.tune("comp", {**body, "_sender": "alice", "_rev": BIG_REV})
                assert reply["code"] == "conflict", reply
                assert reply["path"] == "/payload/message/PatchParams/_sender"
            reply = await mallory.request(
                {
                    "action": "tunenode",
                    "session_id": "s1",
                    "node_id": "comp",
                    "extra": 1,
                    "message": {"PatchParams": {"_sender": "alice", "_rev": BIG_REV}},
                }
            )
            assert reply["code"] == "bad_envelope"
            batch = await mallory.request(
                {
                    "action": "applybatch",
                    "session_id": "s1",
                    "operations": [
                        {
                            "action": "tunenode",
                            "node_id": "comp",
                            "message": {"PatchParams": {"fps": 22, "_sender": "m", "_rev": 1}},
                        },
                        {
                            "action": "tunenode",
                            "node_id": "comp",
                            "message": {"PatchParams": {"fps": 23, "_sender": "alice", "_rev": 9}},
                        },
                    ],
                }
            )
            assert (batch["code"], batch["path"]) == ("conflict", "/payload/operations/1/message/PatchParams/_sender")
            pipeline = await mallory.request({"action": "getpipeline", "session_id": "s1"})
            assert pipeline["nodes"]["comp"]["params"]["fps"] == 20
            assert pipeline["nodes"]["comp"]["acks"] == {"alice": 1}
            assert await alice.tune("comp", {"fps": 24, "_sender": "alice", "_rev": 2}) == {"action": "success"}
        # mallory closed: alice's nonce is still alice's, with its ack
        await alice.tune("comp", {"fps": 25, "_sender": "alice", "_rev": 3})
        assert "alice" not in harness.loops["s1"].forgotten
        pipeline = await alice.request({"action": "getpipeline", "session_id": "s1"})
        assert pipeline["nodes"]["comp"]["acks"] == {"alice": 3}
    await wait_forgotten(harness, "alice")
    # Closed: the nonce stays taken while its acks are reported as retired acks (S7).
    async with connected(harness) as mallory:
        reply = await mallory.tune("comp", {"fps": 26, "_sender": "alice", "_rev": BIG_REV})
        assert reply["code"] == "conflict"
        pipeline = await mallory.request({"action": "getpipeline", "session_id": "s1"})
        assert pipeline["nodes"]["comp"]["retired_acks"] == {"alice": 3}
        assert pipeline["nodes"]["comp"]["params"]["fps"] == 25
