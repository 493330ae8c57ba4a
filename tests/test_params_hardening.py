"""Validation rules of the hardening issue (#14): private keys on every write path, font paths,
compositors feeding compositors, stream destinations, and error lists that stay small."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from compositord.daemon.config import load_pipeline
from compositord.daemon.state.model import private_key_paths
from compositord.protocol import envelope, params
from compositord.protocol.destinations import (
    LOOPBACK_ONLY,
    AllowedDestination,
    DestinationError,
    StreamDestinations,
    parse_stream_url,
)
from compositord.protocol.errors import ErrorCode, RemoteProtocolError

COMP = "video::compositor"


def refusal(fn: Any, *args: Any, **kwargs: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        fn(*args, **kwargs)
    return info.value


def paths(error: RemoteProtocolError) -> set[str]:
    return {e.path for e in error.errors}


def small_pipeline() -> dict[str, Any]:
    return {
        "nodes": {
            "bars": {"kind": "video::colorbars", "params": {"width": 64, "height": 36}},
            "comp": {"kind": COMP, "params": {"width": 64, "height": 36, "num_inputs": 1}},
        },
        "connections": [{"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"}],
    }


# --- one rule for "_" keys --------------------------------------------------------------------


def with_private_keys() -> dict[str, Any]:
    doc = small_pipeline()
    doc["_comment"] = "made by a tool"
    doc["nodes"]["bars"]["_ui"] = {"x": 10}
    doc["nodes"]["bars"]["params"]["_sender"] = "someone"
    doc["nodes"]["comp"]["params"]["layers"] = {"in_0": {"opacity": 0.5, "_locked": True}, "_draft": {}}
    doc["nodes"]["comp"]["params"]["text_overlays"] = [{"id": "t", "text": "hi", "_rev": 3, "rect": {"x": 1, "_hint": 0}}]
    doc["connections"][0]["_colour"] = "red"
    return doc


def test_private_keys_are_stripped_from_pipelines_at_any_depth() -> None:
    normalized = params.validate_pipeline(with_private_keys())
    assert normalized == params.validate_pipeline(
        {
            **small_pipeline(),
            "nodes": {
                **small_pipeline()["nodes"],
                "comp": {
                    "kind": COMP,
                    "params": {
                        "width": 64,
                        "height": 36,
                        "num_inputs": 1,
                        "layers": {"in_0": {"opacity": 0.5}},
                        "text_overlays": [{"id": "t", "text": "hi", "rect": {"x": 1}}],
                    },
                },
            },
        }
    )
    assert list(private_key_paths(normalized)) == []


def test_createsession_strips_private_keys_like_addnode_and_tunes() -> None:
    request = envelope.CreateSession("s", with_private_keys()).to_request()
    action = envelope.parse_action(request)
    assert isinstance(action, envelope.CreateSession)
    assert action.pipeline["nodes"]["bars"]["params"] == {"width": 64, "height": 36}
    assert action.pipeline["connections"][0] == small_pipeline()["connections"][0]
    add = envelope.parse_action(
        envelope.Request("addnode", {"session_id": "s", "node_id": "x", "kind": COMP, "params": {"fps": 25, "_y": {"_z": 1}}})
    )
    assert isinstance(add, envelope.AddNode)
    assert add.params == {"fps": 25}


def test_node_ids_are_names_not_private_keys() -> None:
    doc = small_pipeline()
    doc["nodes"]["_bars"] = doc["nodes"].pop("bars")
    doc["connections"][0]["from_node"] = "_bars"
    assert set(params.validate_pipeline(doc)["nodes"]) == {"_bars", "comp"}


def test_pipeline_files_strip_private_keys(tmp_path: Path) -> None:
    file = tmp_path / "p.yaml"
    file.write_text(yaml.safe_dump(with_private_keys()))
    assert load_pipeline(file) == params.validate_pipeline(with_private_keys())


# --- font like an asset path ------------------------------------------------------------------


@pytest.mark.parametrize("font", ["../../etc/passwd", "/etc/passwd", "fonts/../../x.ttf", "a\\b.ttf", "x\x00.ttf", ""])
def test_font_is_checked_like_an_asset_path(font: str) -> None:
    doc = {"text_overlays": [{"id": "t", "text": "x", "font": font}]}
    assert paths(refusal(params.validate, COMP, doc)) == {"/text_overlays/0/font"}


@pytest.mark.parametrize("font", ["default", "fonts/Inter-Regular.ttf", "my font.otf"])
def test_good_fonts_pass(font: str) -> None:
    doc = {"text_overlays": [{"id": "t", "text": "x", "font": font}]}
    assert params.validate(COMP, doc)["text_overlays"][0]["font"] == font


# --- compositor into compositor ---------------------------------------------------------------


def test_a_compositor_feeding_a_compositor_is_nesting_and_a_cycle_is_refused() -> None:
    doc = small_pipeline()
    doc["nodes"]["outer"] = {"kind": COMP, "params": {"width": 64, "height": 36}}
    doc["connections"].append({"from_node": "comp", "from_pin": "out", "to_node": "outer", "to_pin": "in_0"})
    assert params.validate_pipeline(doc)["connections"][1]["to_node"] == "outer"
    doc["connections"].append({"from_node": "outer", "from_pin": "out", "to_node": "comp", "to_pin": "in_1"})
    doc["nodes"]["comp"]["params"] = {"num_inputs": 2}
    error = refusal(params.validate_pipeline, doc)
    assert error.code is ErrorCode.INVALID_PARAMS and "cycle" in error.message
    request = envelope.CreateSession("s", doc).to_request()
    assert (refusal(envelope.parse_action, request).path or "").startswith("/payload/pipeline/connections")


def stream(url: str, **extra: Any) -> dict[str, Any]:
    return {"url": url, **extra}


@pytest.mark.parametrize(
    "url",
    [
        "udp://127.0.0.1:5000?pkt_size=1316",
        "udp://127.8.9.10:5000",
        "tcp://localhost:9000",
        "tcp://[::1]:9000",
        "rtmp://LOCALHOST/live/key",
    ],
)
def test_loopback_is_allowed_by_default(url: str) -> None:
    fmt = {"format": "flv"} if url.startswith("rtmp") else {}
    assert params.validate("sink::stream", stream(url, **fmt))["url"] == url


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("udp://10.0.0.7:5000", "is not an allowed stream destination"),
        ("tcp://example.com:22", "is not an allowed stream destination"),
        ("tcp://[::ffff:127.0.0.1]:22", "is not an allowed stream destination"),
        ("tcp://2130706433:22", "is not an allowed stream destination"),  # 127.0.0.1 to getaddrinfo, a name here
        ("tcp://127.1:22", "is not an allowed stream destination"),
        ("tcp://localhost.:22", "is not a host name"),
        ("tcp://127.0.0.1:80@example.com:9000", "HOST:PORT"),
        ("tcp://user@127.0.0.1:9000", "HOST:PORT"),
        ("udp://127.0.0.1", "needs a port"),
        ("udp://127.0.0.1:0", "not in 1..65535"),
        ("udp://127.0.0.1:99999", "not in 1..65535"),
        ("tcp://[1:2:3:4:5:6:7:8:9]:9000", "is not an IPv6 address"),
        ("tcp://[::zz]:9000", "HOST:PORT"),
    ],
)
def test_the_daemon_refuses_other_destinations_at_the_url(url: str, why: str) -> None:
    error = refusal(params.validate, "sink::stream", stream(url))
    assert [e.path for e in error.errors] == ["/url"]
    assert why in error.errors[0].message, error.errors[0].message


def test_the_operators_allowlist_and_one_shot_use() -> None:
    allowed = StreamDestinations.parse(["udp://239.0.0.1:5000-5010", "rtmp://live.example.com:1935", "*://10.0.0.0/8:*"])
    context = params.ValidationContext(stream_destinations=allowed)
    assert params.validate("sink::stream", stream("udp://239.0.0.1:5004"), context=context)
    assert params.validate("sink::stream", stream("rtmp://live.example.com/app/k", format="flv"), context=context)
    assert params.validate("sink::stream", stream("tcp://10.1.2.3:9000"), context=context)
    for url in ("udp://239.0.0.1:5011", "tcp://239.0.0.1:5004", "rtmp://live.example.com:1936/a", "udp://127.0.0.1:5000"):
        fmt = {"format": "flv"} if url.startswith("rtmp") else {}
        assert paths(refusal(params.validate, "sink::stream", stream(url, **fmt), context=context)) == {"/url"}, url
    assert params.validate("sink::stream", stream("tcp://192.0.2.1:9000"), context=params.ONE_SHOT)


def test_the_context_reaches_addnode_createsession_and_batches() -> None:
    payload = {"session_id": "s", "node_id": "live", "kind": "sink::stream", "params": stream("udp://192.0.2.1:5000")}
    assert refusal(envelope.parse_action, envelope.Request("addnode", payload)).path == "/payload/params/url"
    context = params.ValidationContext(stream_destinations=StreamDestinations.parse(["udp://192.0.2.1:5000"]))
    added = envelope.parse_action(envelope.Request("addnode", payload), context=context)
    assert isinstance(added, envelope.AddNode) and added.params["url"].startswith("udp://")
    batch = {"session_id": "s", "operations": [{"action": "addnode", **{k: v for k, v in payload.items() if k != "session_id"}}]}
    assert refusal(envelope.parse_action, envelope.Request("applybatch", batch)).path == "/payload/operations/0/params/url"
    batched = envelope.parse_action(envelope.Request("applybatch", batch), context=context)
    assert isinstance(batched, envelope.ApplyBatch) and batched.operations
    doc = {"nodes": {"live": {"kind": "sink::stream", "params": stream("udp://192.0.2.1:5000")}}}
    create = envelope.CreateSession("s", doc).to_request()
    assert refusal(envelope.parse_action, create).path == "/payload/pipeline/nodes/live/params/url"
    assert envelope.parse_action(create, context=context)


@pytest.mark.parametrize(
    "entry", ["udp://", "gopher://x:1", "udp://10.0.0.1/33", "udp://10.0.0.1/8", "udp://x:5-4", "udp://x:70000", "udp://a b"]
)
def test_bad_allowlist_entries_are_named(entry: str) -> None:
    with pytest.raises(DestinationError) as info:
        AllowedDestination.parse(entry)
    assert repr(entry) in str(info.value)


def test_refusals_name_no_more_than_host_and_port() -> None:
    why = LOOPBACK_ONLY.refusal("rtmp://192.0.2.9/app/SECRET-STREAM-KEY?token=SECRET")
    assert why is not None and "SECRET" not in why and "rtmp://192.0.2.9:1935" in why
    assert str(parse_stream_url("tcp://[::1]:9")) == "tcp://[::1]:9"
