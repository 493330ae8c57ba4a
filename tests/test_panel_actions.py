"""The actions the web panel needs beyond the core protocol, through the daemon: ``getschema`` (made from
protocol/params, the source of docs/PARAMS.md), ``exportpipeline`` (YAML that check-config accepts and
that restores the same session), ``parsepipeline``, ``listexamples``, and ``subscribepreview`` of a
compositor node (an ephemeral preview in the engine, shared per size and rate, stopped with its last
subscriber)."""

from __future__ import annotations

import argparse
import base64
import io
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from PIL import Image
from trio_websocket import open_websocket_url

from compositord.cli import check_config
from compositord.daemon.app import render_loop_factory
from compositord.daemon.config import load_pipeline
from compositord.daemon.engine import api
from compositord.protocol import envelope, kind_schema
from compositord.protocol import params as node_params
from compositord.testing.plugin import settings_for, start_daemon
from compositord.tests.sink_helpers import Peer

PIPELINE: dict[str, Any] = {
    "nodes": {
        "bars": {"kind": "video::colorbars", "params": {"width": 320, "height": 180, "animated": True}},
        "comp": {
            "kind": "video::compositor",
            "params": {
                "width": 320,
                "height": 180,
                "fps": 30,
                "num_inputs": 2,
                "layers": {"in_0": {"opacity": 0.5, "rect": {"x": 10, "y": 20, "width": 160, "height": 90}}},
                "text_overlays": [{"id": "title", "text": "héllo: #1", "color": "#FF8800", "rect": {"x": 4, "y": 4}}],
            },
        },
        "thumbs": {"kind": "sink::preview", "params": {"max_width": 80, "max_fps": 2}},
    },
    "connections": [
        {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
        {"from_node": "comp", "from_pin": "out", "to_node": "thumbs", "to_pin": "in"},
    ],
}


class RecordingEngine:
    """The daemon's render loop, with every command the session logic submits kept in order."""

    def __init__(self, engine: Any, commands: list[Any]) -> None:
        self._engine = engine
        self._commands = commands

    def submit(self, command: Any) -> None:
        self._commands.append(command)
        self._engine.submit(command)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


@dataclass
class Daemon:
    url: str
    session_id: str
    commands: list[Any]  # every engine command, in order


@pytest.fixture
async def daemon(tmp_path: Path) -> AsyncIterator[Daemon]:
    settings = settings_for(tmp_path / "state", PIPELINE)
    commands: list[Any] = []
    make = render_loop_factory(settings)
    async with trio.open_nursery() as nursery:
        running = await start_daemon(
            nursery, settings, engine_factory=lambda record, events: RecordingEngine(make(record, events), commands)
        )
        yield Daemon(running.url, running.session_id, commands)
        nursery.cancel_scope.cancel()


def walk_specs(
    spec: node_params.Spec, described: dict[str, Any], path: str
) -> Iterator[tuple[str, node_params.Spec, dict[str, Any]]]:
    yield path, spec, described
    if isinstance(spec, node_params.Object):
        assert list(described["fields"]) == list(spec.fields), path
        for key, child in spec.fields.items():
            yield from walk_specs(child, described["fields"][key], f"{path}/{key}")
    elif isinstance(spec, node_params.MapOf):
        yield from walk_specs(spec.value, described["value"], f"{path}/*")
    elif isinstance(spec, node_params.ListOf):
        yield from walk_specs(spec.item, described["item"], f"{path}/[]")


def test_the_schema_says_what_validation_enforces() -> None:
    document = kind_schema.schema_document()
    assert list(document) == list(node_params.KINDS)
    json.dumps(document, allow_nan=False)  # plain JSON all the way down
    for name, kind in node_params.KINDS.items():
        described = document[name]
        assert described["role"] == kind.role and described["output_pins"] == list(node_params.output_pins(name))
        root = {"fields": described["fields"]}
        for path, spec, field_doc in walk_specs(kind.schema, root | {"type": "object"}, name):
            if path == name:
                continue
            assert field_doc["description"] == spec.describe(), path
            if spec.default is node_params.REQUIRED:
                assert field_doc.get("required") is True, path
            elif spec.default is node_params.AUTO:
                assert field_doc.get("auto") is True, path
            else:
                assert field_doc["default"] == spec.default, path
            if isinstance(spec, (node_params.Int, node_params.Number, node_params.Pixels)):
                assert (field_doc["min"], field_doc["max"]) == (spec.min, spec.max), path
                # The bounds the form offers are the bounds the validator keeps.
                errors: list[Any] = []
                spec.check(spec.max, "/x", errors)
                spec.check(spec.max + 1, "/x", errors)
                assert [e.path for e in errors] == ["/x"], path
            if isinstance(spec, node_params.Enum):
                assert field_doc["choices"] == list(spec.choices)
    assert document["video::compositor"]["input_pins"] == "num_inputs"
    assert document["sink::file"]["input_pins"] == ["in"] and document["video::colorbars"]["input_pins"] == []


async def test_getschema_over_the_wire(daemon: Any) -> None:
    async with open_websocket_url(daemon.url) as ws:
        answer = await Peer(ws).request("getschema")
    assert answer["action"] == "schema" and answer["protocol_version"] == envelope.PROTOCOL_VERSION
    assert answer["kinds"] == kind_schema.schema_document()


async def test_export_is_a_file_check_config_accepts_and_run_restores(daemon: Any, tmp_path: Path, capsys: Any) -> None:
    async with open_websocket_url(daemon.url) as ws:
        peer = Peer(ws)
        tuned = await peer.request(
            "tunenode",
            session_id=daemon.session_id,
            node_id="comp",
            message={"PatchParams": {"layers": {"in_1": {"crop_shape": "circle", "visible": False}}, "background": "#102030"}},
        )
        assert tuned["action"] == "success", tuned
        exported = await peer.request("exportpipeline", session_id=daemon.session_id)
        state = await peer.request("getpipeline", session_id=daemon.session_id)
        refused = await peer.request("exportpipeline", session_id=daemon.session_id, format="toml")
        missing = await peer.request("exportpipeline", session_id="nope")
    assert exported["action"] == "pipelineexported" and exported["format"] == "yaml"
    file = tmp_path / "restored.yaml"
    file.write_text(exported["text"], encoding="utf-8")
    assert check_config.main(argparse.Namespace(file=str(file))) == 0
    assert capsys.readouterr().out.strip() == "ok"
    restored = load_pipeline(file)
    assert restored["nodes"] == {node_id: {"kind": n["kind"], "params": n["params"]} for node_id, n in state["nodes"].items()}
    assert restored["connections"] == state["connections"]
    assert restored["nodes"]["comp"]["params"]["background"] == "#102030FF"
    assert (refused["code"], refused["path"]) == ("invalid_params", "/payload/format")
    assert (missing["code"], missing["path"]) == ("not_found", "/payload/session_id")


async def test_parsepipeline_validates_and_names_the_field_inside_the_text(daemon: Any) -> None:
    good = "nodes:\n  bars: {kind: 'video::colorbars', params: {width: 64, height: 36}}\nconnections: []\n"
    bad = "nodes:\n  comp: {kind: 'video::compositor', params: {width: 0}}\nconnections: []\n"
    toml = '[nodes.bars]\nkind = "video::colorbars"\nparams = {pattern = "ramp"}\n'
    async with open_websocket_url(daemon.url) as ws:
        peer = Peer(ws)
        parsed = await peer.request("parsepipeline", text=good)
        invalid = await peer.request("parsepipeline", text=bad)
        not_yaml = await peer.request("parsepipeline", text="nodes: [unclosed")
        from_toml = await peer.request("parsepipeline", text=toml, format="toml")
        wrong_format = await peer.request("parsepipeline", text=good, format="xml")
    assert parsed["action"] == "pipelineparsed"
    assert parsed["pipeline"] == node_params.validate_pipeline(
        {"nodes": {"bars": {"kind": "video::colorbars", "params": {"width": 64, "height": 36}}}, "connections": []}
    )
    assert (invalid["code"], invalid["path"]) == ("invalid_params", "/payload/text/nodes/comp/params/width")
    assert (not_yaml["code"], not_yaml["path"]) == ("invalid_params", "/payload/text")
    assert "YAML" in not_yaml["message"]
    assert from_toml["pipeline"]["nodes"]["bars"]["params"] == {"pattern": "ramp"}
    assert (wrong_format["code"], wrong_format["path"]) == ("bad_envelope", "/payload/format")


async def test_listexamples_offers_the_demo_and_the_shipped_pipelines(daemon: Any) -> None:
    async with open_websocket_url(daemon.url) as ws:
        answer = await Peer(ws).request("listexamples")
    names = [example["name"] for example in answer["examples"]]
    assert names[0] == "demo" and "example-pipeline" in names
    for example in answer["examples"]:
        assert node_params.validate_pipeline(example["pipeline"]) == example["pipeline"], example["name"]


def decode(payload: dict[str, Any]) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(payload["data"])))
    assert image.format == "JPEG" and image.size == (payload["width"], payload["height"])
    return image


@pytest.mark.gl
async def test_a_compositor_preview_lives_as_long_as_its_subscribers(daemon: Any) -> None:
    session = daemon.session_id
    starts = lambda: [c for c in daemon.commands if isinstance(c, api.StartCompositorPreview)]  # noqa: E731
    stops = lambda: [c for c in daemon.commands if isinstance(c, api.StopCompositorPreview)]  # noqa: E731
    async with open_websocket_url(daemon.url) as ws_a, open_websocket_url(daemon.url) as ws_b:
        a, b = Peer(ws_a), Peer(ws_b)
        ok = await a.request("subscribepreview", session_id=session, node_id="comp", max_width=160, max_fps=10)
        assert ok["action"] == "success", ok
        window = 1.5
        updates = await a.previews(window)
        assert updates, "a compositor subscription brings nodepreviewupdated"
        assert len(updates) <= 10 * window + 1, f"{len(updates)} in {window} s is over max_fps 10"
        for update in updates:
            assert update["node_id"] == "comp" and (update["width"], update["height"]) == (160, 90)
            assert update["rendered_at"] <= update["timestamp"], "rendered before it was encoded"
        decode(updates[-1])
        # The same size and rate from a second connection shares the engine's preview.
        assert (await b.request("subscribepreview", session_id=session, node_id="comp", max_width=160, max_fps=10))[
            "action"
        ] == "success"
        assert len(await b.previews(0.5)) >= 1
        assert len(starts()) == 1
        # A sink::preview node keeps its own size and rate; out-of-range values are refused where they are.
        not_here = await a.request("subscribepreview", session_id=session, node_id="thumbs", max_width=100)
        assert (not_here["code"], not_here["path"]) == ("invalid_params", "/payload/max_width")
        too_fast = await a.request("subscribepreview", session_id=session, node_id="comp", max_fps=1000)
        assert (too_fast["code"], too_fast["path"]) == ("bad_envelope", "/payload/max_fps")
        assert (await a.request("unsubscribepreview", session_id=session, node_id="comp"))["action"] == "success"
        assert stops() == [], "b still watches"
        await a.previews(0.3)  # one may have been on its way
        assert await a.previews(0.5) == []
    # b's connection closed: the preview had no subscriber left and was stopped.
    with trio.fail_after(5):
        while not stops():
            await trio.sleep(0.02)
    assert [s.preview_id for s in stops()] == [starts()[0].preview_id]


def test_a_spec_the_schema_does_not_know_still_says_what_it_takes() -> None:
    class Odd(node_params.Spec):
        default = node_params.AUTO

        def describe(self) -> str:
            return "something odd"

    assert kind_schema.field_schema(Odd()) == {"type": "other", "description": "something odd", "auto": True}
