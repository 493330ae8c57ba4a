"""Nested compositors: one compositor's output as another's input, drawn from its texture in the same frame.

Drawn 1:1 over the whole canvas, the nested picture is bit for bit the same layout drawn flat; scaled into
a picture-in-picture box, it matches the NumPy model of the inner picture used as a source. The outer
compositor's view data shows the inner one as one layer; cycles are refused before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from compositord.daemon.engine import compositor_graph
from compositord.daemon.engine.loop import RenderLoop
from compositord.daemon.state.model import ConnectionRecord, NodeRecord, SessionRecord
from compositord.protocol.errors import RemoteProtocolError
from compositord.protocol.params import validate_pipeline
from compositord.tests.engine_recorder import EventRecorder
from compositord.tests.render_reference import EDGE_BAND, RefLayer, assert_close, composite
from compositord.tests.sink_helpers import wait_until

pytestmark = pytest.mark.gl

W, H = 160, 90
INNER_LAYERS = {
    "in_0": {"rect": {"x": 0, "y": 0, "width": W, "height": H}},
    "in_1": {"rect": {"x": 90, "y": 40, "width": 64, "height": 36}, "opacity": 0.7, "rotation_degrees": 12},
}


def compositor(**params: Any) -> dict[str, Any]:
    return {"width": W, "height": H, "fps": 60, **params}


def sources() -> dict[str, NodeRecord]:
    return {
        "bars": NodeRecord("bars", "video::colorbars", {"width": W, "height": H}),
        "ramp": NodeRecord("ramp", "video::colorbars", {"width": 64, "height": 36, "pattern": "ramp"}),
    }


def nested_session(outer_layers: dict[str, Any], extra: dict[str, NodeRecord] | None = None) -> SessionRecord:
    """bars + ramp into ``inner``; ``inner``'s program into ``outer``'s in_0; ``flat`` draws the inner layout directly."""
    nodes = {
        **sources(),
        "inner": NodeRecord("inner", "video::compositor", compositor(layers=INNER_LAYERS)),
        "outer": NodeRecord("outer", "video::compositor", compositor(num_inputs=1, layers=outer_layers)),
        "flat": NodeRecord("flat", "video::compositor", compositor(layers=INNER_LAYERS)),
        **(extra or {}),
    }
    connections = [
        ConnectionRecord("bars", "out", "inner", "in_0"),
        ConnectionRecord("ramp", "out", "inner", "in_1"),
        ConnectionRecord("inner", "out", "outer", "in_0"),
        ConnectionRecord("bars", "out", "flat", "in_0"),
        ConnectionRecord("ramp", "out", "flat", "in_1"),
    ]
    return SessionRecord("s1", "nested", nodes, connections)


def rgba(loop: RenderLoop, node: str, pin: str = "out") -> np.ndarray:
    output = loop.latest_output(node, pin)
    assert output is not None, f"{node}.{pin} read back nothing"
    return output.as_array()


async def test_a_nested_compositor_is_drawn_identically_to_the_same_layout_flat(start_loop: Callable[..., Any]) -> None:
    recorder = EventRecorder()
    full_canvas = {"in_0": {"rect": {"x": 0, "y": 0, "width": W, "height": H}}}
    loop = await start_loop(nested_session(full_canvas), recorder)
    await wait_until(lambda: {view.node_id for view in recorder.views} >= {"outer", "flat"})
    await wait_until(lambda: loop.latest_output("outer") is not None and loop.latest_output("flat") is not None)
    assert np.array_equal(rgba(loop, "outer"), rgba(loop, "flat"))
    # The inner compositor feeds only a compositor: drawn from its texture, never read back.
    assert loop.latest_output("inner") is None
    # The outer view data shows the inner compositor as one layer of its canvas size.
    outer = [view for view in recorder.views if view.node_id == "outer"][-1]
    assert outer.layout["layers"] == [
        {"id": "in_0", "x": 0, "y": 0, "width": W, "height": H, "source_width": W, "source_height": H}
    ]
    inner = [view for view in recorder.views if view.node_id == "inner"][-1]
    assert [layer["id"] for layer in inner.layout["layers"]] == ["in_0", "in_1"]


async def test_a_nested_picture_in_picture_matches_the_model(start_loop: Callable[..., Any]) -> None:
    """The inner picture scaled into a box and turned: the NumPy model of the flat picture, used as a source."""
    recorder = EventRecorder()
    box = {"in_0": {"rect": {"x": 20, "y": 10, "width": 112, "height": 63}, "rotation_degrees": -8, "opacity": 0.9}}
    session = nested_session(box)
    # The inner picture read back is the source the model samples: a sink on inner makes it read back too.
    session.nodes["thumbs"] = NodeRecord("thumbs", "sink::preview", {})
    session.connections.append(ConnectionRecord("inner", "out", "thumbs", "in"))
    loop = await start_loop(session, recorder)
    await wait_until(lambda: loop.latest_output("outer") is not None and loop.latest_output("inner") is not None)
    await wait_until(lambda: loop.statistics().frames_rendered >= 3)
    inner = rgba(loop, "inner")
    assert np.array_equal(inner, rgba(loop, "flat")), "read back for a sink, the inner picture is the flat one"
    background = (0.0, 0.0, 0.0, 1.0)
    reference, edges = composite(
        W, H, background, [RefLayer(inner, 20, 10, 112, 63, rotation_degrees=-8, opacity=0.9, premultiplied=True)], EDGE_BAND
    )
    assert_close(rgba(loop, "outer"), reference * 255.0, edges, min_compared=0.3)


async def test_a_preview_output_nests_too(start_loop: Callable[..., Any]) -> None:
    recorder = EventRecorder()
    session = nested_session({"in_0": {"rect": {"x": 0, "y": 0, "width": W, "height": H}}})
    inner = session.nodes["inner"]
    session.nodes["inner"] = NodeRecord(
        "inner",
        "video::compositor",
        compositor(
            scenes={"main": {"layers": INNER_LAYERS}, "bars_only": {"layers": {"in_1": {"visible": False}}}},
            program_scene="main",
            preview_scene="bars_only",
        ),
        inner.seq,
    )
    session.nodes["bars_view"] = NodeRecord("bars_view", "video::compositor", compositor(num_inputs=1))
    session.nodes["bars_flat"] = NodeRecord("bars_flat", "video::compositor", compositor(num_inputs=1))
    session.connections += [
        ConnectionRecord("inner", "preview", "bars_view", "in_0"),
        ConnectionRecord("bars", "out", "bars_flat", "in_0"),
    ]
    loop = await start_loop(session, recorder)
    await wait_until(lambda: all(loop.latest_output(node) is not None for node in ("outer", "flat", "bars_view", "bars_flat")))
    await wait_until(lambda: loop.statistics().frames_rendered >= 3)
    assert np.array_equal(rgba(loop, "outer"), rgba(loop, "flat"))
    assert np.array_equal(rgba(loop, "bars_view"), rgba(loop, "bars_flat"))


def test_render_order_puts_every_compositor_after_those_that_feed_it() -> None:
    session = nested_session({})
    session.nodes["top"] = NodeRecord("top", "video::compositor", compositor(num_inputs=1))
    session.connections.append(ConnectionRecord("outer", "out", "top", "in_0"))
    order = compositor_graph.render_order(session)
    assert order.index("inner") < order.index("outer") < order.index("top") and set(order) == {"inner", "outer", "flat", "top"}
    uses = compositor_graph.output_uses(session, lambda kind: kind.startswith("sink::"))
    assert uses["inner"] == compositor_graph.OutputUses(program_to_compositors=True)
    assert uses["top"] == compositor_graph.OutputUses()


def test_a_cycle_of_compositors_is_refused_at_validation() -> None:
    session = nested_session({})
    session.connections.append(ConnectionRecord("outer", "out", "inner", "in_1"))
    doc = session.to_pipeline()
    doc["connections"] = [c for c in doc["connections"] if not (c["from_node"] == "ramp" and c["to_node"] == "inner")]
    with pytest.raises(RemoteProtocolError) as info:
        validate_pipeline(doc)
    assert {e.path: e.message for e in info.value.errors} == {"/connections": "connections form a cycle: inner -> outer -> inner"}
