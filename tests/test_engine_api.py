"""engine/api.py is the seam between the control side and an engine: every command and event is plain
data (it survives pickle, and JSON with bytes as base64, unchanged), and the control side imports
nothing of the engine but this module."""

from __future__ import annotations

import base64
import dataclasses
import json
import pickle
import subprocess
import sys
import types
import typing
from typing import Any

import pytest

from compositord.daemon.engine import api
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.protocol.causal import Stamp
from compositord.protocol.scenes import AnimateSpec
from compositord.tests.engine_recorder import assert_plain

SESSION = SessionRecord(
    "s1",
    "demo",
    {
        "bars": NodeRecord("bars", "video::colorbars", {"width": 320, "height": 180}, 2),
        "comp": NodeRecord("comp", "video::compositor", {"width": 320, "height": 180, "layers": {"in_0": {"opacity": 0.5}}}),
    },
    [ConnectionRecord("bars", "out", "comp", "in_0")],
)
LAYOUT = {
    "canvas_width": 320,
    "canvas_height": 180,
    "layers": [{"id": "in_0", "x": 0, "y": 0, "width": 320, "height": 180, "source_width": 320, "source_height": 180}],
}

# One of each command and event (several where a field may be None), and the data that crosses with them.
SAMPLES: list[Any] = [
    api.ParamsUpdate(
        "comp", {"width": 640, "layers": {"in_0": {"rect": {"x": 1, "y": 2, "width": 3, "height": 4}}}}, Stamp("a", 7)
    ),
    api.ParamsUpdate("bars", {"pattern": "ramp"}, None),
    api.ParamsUpdate("comp", {"layers": {"in_0": {"opacity": 0.2}}}, Stamp("a", 9), AnimateSpec(400, "ease_out")),
    api.ParamsUpdate("comp", {"program_scene": "pip"}, Stamp("a", 10), transition={"kind": "cut"}),
    api.BatchUpdate((api.ParamsUpdate("comp", {"width": 320}, Stamp("a", 8)), api.ParamsUpdate("bars", {}, None)), SESSION),
    api.BatchUpdate((api.ParamsUpdate("comp", {"fps": 60}, None),)),
    api.TopologyUpdate(SESSION),
    api.ForgetSender("a"),
    api.StartCompositorPreview("p1", "comp", 640, 15.0),
    api.StopCompositorPreview("p1"),
    api.Stop(),
    api.PushedFrame("cam", 2, 2, "rgba8", -33_333, bytes(range(16))),
    api.ViewData("s1", "comp", LAYOUT, Stamp("a", 7), {"a": 7, "b": 2}, 12, 1_700_000_000.25),
    api.ViewData("s1", "comp", LAYOUT, None, {}, 1, 1_700_000_000.5),
    api.NodeStats("s1", "comp", {"frames_rendered": 90, "fps": 30, "render_ms_p50": 1.5, "state": "running"}),
    api.NodeState("s1", "clip", "video::file: cannot open clip.mp4"),
    api.NodeState("s1", "clip", None),
    api.PreviewUpdated("s1", "thumbs", api.PreviewImage(b"\xff\xd8\xff\xe0jpeg", 160, 90, 41, 1.366667, 1_700_000_001.0)),
    api.CompositorPreviewUpdated(
        "s1", "p1", "comp", api.PreviewImage(b"\xff\xd8\xff\xe0jpeg", 640, 360, 42, 1.4, 1_700_000_001.5), 1_700_000_001.49
    ),
    api.FrameEnded("s1"),
    api.Started("s1"),
    api.Failed("s1", "GLContextError: no OpenGL context"),
    api.EngineStatistics(frames_rendered=300, frames_dropped=2, frames_late=1, fps=30),
    api.EngineHealth("process", api.ENGINE_RESTARTING, "exited with status -9", None, 2, 150 * 2**20),
]


def message_types() -> set[type]:
    return {*typing.get_args(api.Command), *typing.get_args(api.Event), api.PushedFrame, api.EngineStatistics, api.EngineHealth}


def sample_id(sample: Any) -> str:
    return type(sample).__name__


def test_every_command_and_event_type_has_a_sample() -> None:
    assert {type(sample) for sample in SAMPLES} == message_types()
    for message_type in message_types():
        # __dataclass_params__ is how the dataclasses module records frozen=; typeshed does not declare it.
        assert dataclasses.is_dataclass(message_type) and message_type.__dataclass_params__.frozen, message_type  # type: ignore[attr-defined]


@pytest.mark.parametrize("message", SAMPLES, ids=sample_id)
def test_a_message_is_plain_data(message: Any) -> None:
    assert_plain(message)


def test_the_plain_data_check_finds_what_is_not() -> None:
    # The check above must be able to fail, or it proves nothing.
    with pytest.raises(AssertionError, match="/stats/when: datetime"):
        import datetime

        assert_plain(api.NodeStats("s1", "comp", {"when": datetime.datetime.now()}))


@pytest.mark.parametrize("message", SAMPLES, ids=sample_id)
def test_pickle_round_trip(message: Any) -> None:
    copied = pickle.loads(pickle.dumps(message))
    assert type(copied) is type(message) and copied == message


@pytest.mark.parametrize("message", SAMPLES, ids=sample_id)
def test_json_round_trip(message: Any) -> None:
    text = json.dumps(dataclasses.asdict(message), default=_encode_bytes, allow_nan=False)
    copied = _decode(type(message), json.loads(text))
    assert type(copied) is type(message) and copied == message


def _encode_bytes(value: Any) -> Any:
    if isinstance(value, (bytes, memoryview)):
        return {"base64": base64.b64encode(value).decode("ascii")}
    raise TypeError(f"{type(value).__name__} is not JSON")


def _decode(hint: Any, value: Any) -> Any:
    """Rebuild a value of type ``hint`` from its JSON form, led by the type hints alone."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in (o for o in options if o is not type(None)):
            try:
                return _decode(option, value)
            except TypeError:
                continue
        raise TypeError(f"{value!r} is none of {options}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise TypeError(f"{hint.__name__} from {value!r}")
        hints = typing.get_type_hints(hint)
        return hint(**{item.name: _decode(hints[item.name], value[item.name]) for item in dataclasses.fields(hint)})
    if origin is dict:
        _, item_hint = typing.get_args(hint)
        return {key: _decode(item_hint, item) for key, item in value.items()}
    if origin is list:
        (item_hint,) = typing.get_args(hint)
        return [_decode(item_hint, item) for item in value]
    if origin is tuple:
        item_hint, _ellipsis = typing.get_args(hint)
        return tuple(_decode(item_hint, item) for item in value)
    if hint in (bytes, memoryview):
        if not (isinstance(value, dict) and set(value) == {"base64"}):
            raise TypeError(f"bytes from {value!r}")
        return base64.b64decode(value["base64"])
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, hint):
        raise TypeError(f"{hint} from {value!r}")
    return value


_IMPORT_PROBE = """
import importlib, json, pkgutil, sys
import compositord.daemon.control as control, compositord.daemon.sessions as sessions
names = ["compositord.daemon.app", "compositord.daemon.config", "compositord.daemon.state.model",
         "compositord.daemon.state.store", "compositord.daemon.engine.api"]
names += [package.__name__ + "." + m.name for package in (control, sessions) for m in pkgutil.iter_modules(package.__path__)]
for name in names:
    importlib.import_module(name)
print(json.dumps({"imported": names, "loaded": sorted(sys.modules)}))
"""


def test_the_control_side_imports_no_engine_internals_and_nothing_that_draws_or_decodes() -> None:
    result = subprocess.run([sys.executable, "-c", _IMPORT_PROBE], capture_output=True, text=True, timeout=60, check=True)
    found = json.loads(result.stdout)
    assert "compositord.daemon.sessions.service" in found["imported"]  # the probe walked the package
    loaded = set(found["loaded"])
    assert {"compositord.daemon.app", "compositord.daemon.engine.api"} <= loaded
    engine = {name for name in loaded if name.startswith("compositord.daemon.engine.")}
    # The seam, and the two plain-data modules that carry it between processes (socket frames, shared memory).
    assert engine <= {"compositord.daemon.engine.api", "compositord.daemon.engine.wire", "compositord.daemon.engine.frame_slots"}
    heavy = {name for name in loaded if name.split(".")[0] in ("moderngl", "glcontext", "glfw", "av", "PIL", "numpy")}
    assert heavy == set()
