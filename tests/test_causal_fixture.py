"""tests/fixtures/causal_histories.json: current with the Python rules, and covering what it must.

The panel's JavaScript client replays the fixture (tests/js/, run by
``./scripts/dev test`` with ``node --test``); these tests make sure that what
it replays is what protocol/causal.py does today.
"""

from __future__ import annotations

import json

from compositord.tests import causal_fixture


def test_the_committed_fixture_is_what_the_python_rules_make_now() -> None:
    fixture, _coverage = causal_fixture.generate()
    committed = causal_fixture.FIXTURE.read_text(encoding="utf-8")
    assert committed == causal_fixture.render(fixture), (
        "tests/fixtures/causal_histories.json is stale: run python -m compositord.tests.causal_fixture --write"
    )
    assert causal_fixture.main(["--check"]) == 0


def test_generating_twice_gives_the_same_text() -> None:
    first, _ = causal_fixture.generate()
    second, _ = causal_fixture.generate()
    assert causal_fixture.render(first) == causal_fixture.render(second)
    assert json.loads(causal_fixture.render(first)) == first


def test_the_fixture_covers_refusals_over_pending_edits_and_reconnects() -> None:
    fixture, coverage = causal_fixture.generate()
    # the seeded paced histories keep exercising the cases at stake, not only the scripted ones
    assert coverage.refusals_over_pending > 0
    assert coverage.refused > 10
    assert coverage.reconnects > 0 and coverage.resent_groups > 0
    ops = {step["op"] for history in fixture["histories"] for step in history["steps"]}
    assert ops == {"edit_patch", "edit_replace", "event", "pipeline", "refused", "forget_node", "reconnected", "take_resend"}
    issue = next(h for h in fixture["histories"] if h["name"].startswith("refusal overtakes the paced ack"))
    refusal = next(step for step in issue["steps"] if step["op"] == "refused")
    # what the JS client must show at the refusal: the pending rev 1, not the server's older value
    assert refusal["shown"]["comp"]["params"]["layers"]["in_1"]["opacity"] == 0.25
