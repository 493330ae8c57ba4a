"""The pytest plugin as another project sees it: a test file outside this repository, no conftest,
no imports of compositord, only the fixtures the installed entry point provides."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

OTHER_PROJECT_TEST = """
import pytest


@pytest.mark.trio
async def test_daemon_and_client(compositord_daemon, compositord_client):
    session = compositord_daemon.session_id
    await compositord_client.tune(session, "comp", {"layers": {"in_0": {"opacity": 0.5}}})
    pipeline = await compositord_client.get_pipeline(session)
    assert pipeline["nodes"]["comp"]["params"]["layers"]["in_0"]["opacity"] == 0.5
    assert compositord_daemon.database.exists()


@pytest.fixture
def compositord_pipeline():
    return {
        "nodes": {
            "a": {"kind": "video::colorbars", "params": {"width": 64, "height": 36}},
            "comp": {"kind": "video::compositor", "params": {"width": 64, "height": 36}},
        },
        "connections": [{"from_node": "a", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
    }
"""


def test_fixtures_work_in_another_project(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_other=OTHER_PROJECT_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
