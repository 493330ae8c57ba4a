"""Issue #16: StreamKit's web UI drives compositord unchanged, over the wire, against the real daemon.

The StreamKit side is ``tests/streamkit_client.py``, a client written from
the message shapes and client rules of StreamKit's public UI source. The
compositord side is the daemon as it runs (render loops on llvmpipe), with
compositord's own client library beside it to read the server's state and to
show that its clients get what they always got.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import io
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import h11
import pytest
import trio
from PIL import Image
from wsproto.events import TextMessage

from compositord.client import open_client
from compositord.protocol import params, streamkit
from compositord.testing.plugin import RunningDaemon, settings_for, start_daemon
from compositord.tests.streamkit_client import CompositorEditor, StreamKitClient, streamkit_client, without_private
from compositord.tests.websocket_peers import RawClient, plain_http

COMP = params.COMPOSITOR_KIND
SIZE = (160, 90)
DRAG_HZ = 60
DRAG_STEPS = 90  # 1.5 s at 60 Hz


def png(width: int, height: int, colour: tuple[int, int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGBA", (width, height), colour).save(out, format="PNG")
    return out.getvalue()


LOGO = png(12, 8, (0, 200, 255, 255))
BADGE = png(8, 8, (255, 64, 0, 200))


def streamkit_url(daemon: RunningDaemon) -> str:
    return daemon.url + "?" + streamkit.COMPAT_QUERY + "=" + streamkit.STREAMKIT


async def http_get(daemon: RunningDaemon, path: str, headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, Any]:
    request = h11.Request(method="GET", target=path, headers=[(b"host", b"localhost"), *(headers or [])])
    (response, body), *_ = await plain_http(daemon.host, daemon.port, [request])
    content_type = dict(response.headers).get(b"content-type", b"")
    return response.status_code, json.loads(body) if content_type.startswith(b"application/json") else body.decode()


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Wait for ``condition``; ``what`` names it in the failure."""
    try:
        with trio.fail_after(timeout):
            while not condition():
                await trio.sleep(0.02)
    except trio.TooSlowError:
        raise AssertionError(f"not within {timeout:g} s: {what or condition}") from None


def acked(client: StreamKitClient, session_id: str, node_id: str, rev: int) -> bool:
    """The client's own rev has come back in the node's view data (its edit is on screen)."""
    data = client.view_data.get((session_id, node_id), {})
    return data.get("_sender") == client.nonce and data.get("_rev") == rev


async def build_pipeline_as_streamkit(client: StreamKitClient) -> str:
    """What StreamKit's UI does to start a session: an empty session, then nodes and connections."""
    created = await client.request("createsession", name=None)
    assert created["action"] == "sessioncreated", created
    assert created["created_at"].endswith("Z")
    session_id = created["session_id"]
    w, h = SIZE
    for node_id, kind, node_params in [
        ("bars", "video::colorbars", {"width": w, "height": h}),
        ("ramp", "video::colorbars", {"width": w, "height": h, "pattern": "ramp"}),
        ("comp", COMP, None),  # StreamKit adds a node with params null, then configures it
    ]:
        answer = await client.request("addnode", session_id=session_id, node_id=node_id, kind=kind, params=node_params)
        assert answer["action"] == "success", answer
    for source, pin, mode in [("bars", "in_0", "reliable"), ("ramp", "in_1", "best_effort")]:
        link = {"from_node": source, "from_pin": "out", "to_node": "comp", "to_pin": pin, "mode": mode}
        answer = await client.request("connect", session_id=session_id, **link)
        assert answer["action"] == "success", answer
    return session_id


@pytest.mark.parametrize(
    "image_style, silent",
    [
        pytest.param("asset_path", False, id="streamkit-now"),  # images by asset path, tunenodeasync
        pytest.param("data_base64", True, id="streamkit-older"),  # inline images without ids, tunenodesilent
    ],
)
async def test_a_streamkit_client_drags_a_layer_at_60hz_while_another_watches(
    compositord_daemon: RunningDaemon, image_style: str, silent: bool
) -> None:
    settings = compositord_daemon.settings
    settings.asset_dir.mkdir(parents=True, exist_ok=True)
    (settings.asset_dir / "logo.png").write_bytes(LOGO)
    status, definitions = await http_get(compositord_daemon, "/api/v1/schema/nodes")
    assert status == 200 and COMP in {d["kind"] for d in definitions}

    async with streamkit_client(streamkit_url(compositord_daemon)) as a, streamkit_client(streamkit_url(compositord_daemon)) as b:
        session_id = await build_pipeline_as_streamkit(a)
        status, sessions = await http_get(compositord_daemon, "/api/v1/sessions")
        assert status == 200 and session_id in {s["id"] for s in sessions}

        # A configures the compositor as StreamKit's editor does: both inputs as layers, a text and an image overlay.
        await a.load(session_id)
        await until(lambda: (session_id, "comp") in a.view_data, what="first view data")
        editor = CompositorEditor(a, session_id, "comp", image_style=image_style, silent=silent)
        for served in a.view_data[(session_id, "comp")]["layers"]:
            editor.layers.append(
                {
                    "id": served["id"],
                    **{k: served[k] for k in ("x", "y", "width", "height")},
                    "opacity": 1.0,
                    "rotation": 0.0,
                    "z_index": int(served["id"][3:]),
                    "mirror_horizontal": False,
                    "mirror_vertical": False,
                    "visible": True,
                    "crop_zoom": 1.0,
                    "crop_x": 0.5,
                    "crop_y": 0.5,
                    "crop_shape": "rect",
                }
            )
        editor.add_text("LIVE", color=[255, 220, 0, 255], x=4, y=4, mirror_horizontal=True)
        if image_style == "data_base64":
            editor.add_image(x=120, y=4, width=32, height=32, data_base64=base64.b64encode(BADGE).decode())
        else:
            editor.add_image(x=120, y=4, width=32, height=32, asset_path="logo.png")
        rev = await editor.commit()
        await until(lambda: acked(a, session_id, "comp", rev), what="the configuration on screen")

        # Both load the pipeline with its overlays, as StreamKit's monitor view does.
        loaded = await b.load(session_id)
        await a.load(session_id)
        comp = loaded["nodes"]["comp"]
        assert comp["state"] == "Running"
        assert comp["params"]["text_overlays"][0]["color"] == [255, 220, 0, 255]
        assert comp["params"]["text_overlays"][0]["font_name"] == "default"
        assert [o["id"] for o in loaded["view_data"]["comp"]["image_overlays"]] == [comp["params"]["image_overlays"][0]["id"]]
        if image_style == "data_base64":
            image = comp["params"]["image_overlays"][0]
            assert image["id"] == "img_0" and image["data_base64"] == base64.b64encode(BADGE).decode()
            stored = settings.asset_dir / image["asset_path"]
            assert stored.read_bytes() == BADGE and image["asset_path"] == f"inline/{hashlib.sha256(BADGE).hexdigest()}.png"
        editor.parse()

        # The drag: layer in_1 one pixel per commit, at 60 Hz, each commit the whole stamped config.
        start_x = next(layer["x"] for layer in editor.layers if layer["id"] == "in_1")
        for step in range(1, DRAG_STEPS + 1):
            editor.move_layer("in_1", start_x - step // 2, step // 3)
            last_rev = await editor.commit()
            await trio.sleep(1 / DRAG_HZ)
        await until(lambda: acked(a, session_id, "comp", last_rev), what="the drag's last commit on screen")
        # B watches: the same view data reaches it (its params event left before, in the same frame or earlier).
        await until(lambda: b.view_data[(session_id, "comp")].get("_rev") == last_rev, what="B's last view data")

        async with open_client(compositord_daemon.url) as observer:
            server = await observer.get_pipeline(session_id)
        durable = server["nodes"]["comp"]["params"]
        view = server["nodes"]["comp"]["view_data"]

        assert a.errors == [] and b.errors == [], "0 refused messages"
        # Converged: what A shows, what B was told and what the server stores are the same config ...
        shown_by_a = params.validate(COMP, streamkit.canonical_params(editor.config()).params)
        told_to_b = params.validate(COMP, streamkit.canonical_params(b.params[(session_id, "comp")]).params)
        assert shown_by_a == durable == told_to_b
        assert durable["layers"]["in_1"]["rect"]["x"] == round(start_x - DRAG_STEPS // 2)
        assert durable["text_overlays"][0]["mirror_horizontal"] is True
        # ... and the same layout.
        assert without_private(a.view_data[(session_id, "comp")]) == view == without_private(b.view_data[(session_id, "comp")])
        assert server["nodes"]["comp"]["state"] == "ok", "every overlay resolved (no missing image, no bad font)"

        # B saw the drag as StreamKit's UI expects it.
        b_params = [e for e in b.events if e.get("event") == "nodeparamschanged" and e.get("node_id") == "comp"]
        b_views = [e for e in b.events if e.get("event") == "nodeviewdataupdated" and e.get("node_id") == "comp"]
        assert len(b_params) >= DRAG_STEPS // 4 and len(b_views) >= DRAG_STEPS // 4
        assert all(isinstance(e["params"]["text_overlays"][0]["color"], list) for e in b_params)
        assert all(isinstance(e["timestamp"], str) and e["timestamp"].endswith("Z") for e in b_views)


async def test_a_streamkit_config_and_a_canonical_one_store_the_same_thing(compositord_daemon: RunningDaemon) -> None:
    session_id = compositord_daemon.session_id
    badge = base64.b64encode(BADGE).decode()
    streamkit_config: dict[str, Any] = {
        "width": 160,
        "height": 90,
        "text_overlays": [
            {
                "text": "Hi",
                "color": [10, 20, 30, 40],
                "font_name": "dejavu-sans",
                "rect": {"x": 1, "y": 2, "width": 50, "height": 20},
            }
        ],
        "image_overlays": [{"data_base64": badge, "rect": {"x": 3, "y": 4, "width": 8, "height": 8}, "mirror_vertical": True}],
    }
    canonical_config: dict[str, Any] = {
        "width": 160,
        "height": 90,
        "text_overlays": [
            {
                "id": "text_0",
                "text": "Hi",
                "color": "#0A141E28",
                "font": "default",
                "rect": {"x": 1, "y": 2, "width": 50, "height": 20},
            }
        ],
        "image_overlays": [
            {
                "id": "img_0",
                "asset_path": f"inline/{hashlib.sha256(BADGE).hexdigest()}.png",
                "rect": {"x": 3, "y": 4, "width": 8, "height": 8},
                "mirror_vertical": True,
            }
        ],
    }
    async with streamkit_client(streamkit_url(compositord_daemon)) as kit, open_client(compositord_daemon.url) as own:
        # Added: the StreamKit spelling by the StreamKit client, the canonical one by compositord's client.
        assert (await kit.request("addnode", session_id=session_id, node_id="kit", kind=COMP, params=streamkit_config))[
            "action"
        ] == "success"
        await own.add_node(session_id, "own", COMP, canonical_config)
        stored = (await own.get_pipeline(session_id))["nodes"]
        assert stored["kit"]["params"] == stored["own"]["params"]
        # Tuned: the same again, whole configs, each as its client spells it.
        retuned = copy.deepcopy(streamkit_config)
        retuned["text_overlays"][0]["color"] = [1, 2, 3, 4]
        answer = await kit.request("tunenode", session_id=session_id, node_id="kit", message={"UpdateParams": retuned})
        assert answer["action"] == "success", answer
        canonical_retuned = copy.deepcopy(canonical_config)
        canonical_retuned["text_overlays"][0]["color"] = "#01020304"
        await own.tune(session_id, "own", canonical_retuned, replace=True)
        stored = (await own.get_pipeline(session_id))["nodes"]
        assert stored["kit"]["params"] == stored["own"]["params"]
        assert stored["kit"]["params"]["text_overlays"][0]["color"] == "#01020304"
        assert (compositord_daemon.settings.asset_dir / canonical_config["image_overlays"][0]["asset_path"]).read_bytes() == BADGE
    assert kit.errors == []


async def test_update_params_merges_for_streamkit_clients_and_replaces_for_compositords(
    compositord_daemon: RunningDaemon,
) -> None:
    session_id = compositord_daemon.session_id
    base = {"width": 160, "height": 90, "fps": 30, "background": "#102030FF"}
    async with streamkit_client(streamkit_url(compositord_daemon)) as kit, open_client(compositord_daemon.url) as own:
        await own.add_node(session_id, "c1", COMP, base)
        await own.add_node(session_id, "c2", COMP, base)
        # StreamKit's monitor view sends one key per UpdateParams; its server merges it in.
        layers = {"in_0": {"rect": {"x": 0, "y": 0, "width": 80, "height": 45}, "opacity": 0.5}}
        answer = await kit.request("tunenode", session_id=session_id, node_id="c1", message={"UpdateParams": {"layers": layers}})
        assert answer["action"] == "success", answer
        nested = {"layers": {"in_0": {"rect": {"x": 7}}}}
        await kit.request("tunenode", session_id=session_id, node_id="c1", message={"UpdateParams": nested})
        # compositord's own clients keep UpdateParams' meaning: the params become exactly this.
        await own.tune(session_id, "c2", {"layers": layers}, replace=True)
        stored = (await own.get_pipeline(session_id))["nodes"]
    assert stored["c1"]["params"] == {
        **base,
        "layers": {"in_0": {"rect": {"x": 7, "y": 0, "width": 80, "height": 45}, "opacity": 0.5}},
    }
    assert stored["c2"]["params"] == {"layers": layers}
    assert kit.errors == []


async def test_tunenodesilent_is_applied_and_acknowledged_to_its_sender(compositord_daemon: RunningDaemon) -> None:
    session_id = compositord_daemon.session_id
    async with streamkit_client(streamkit_url(compositord_daemon)) as kit:
        await kit.load(session_id)
        config = copy.deepcopy(kit.params[(session_id, "comp")])
        config["background"] = "#00FF00FF"
        rev = kit.bump_rev("comp")
        body = {**config, "_sender": kit.nonce, "_rev": rev}
        await kit.fire_and_forget("tunenodesilent", session_id=session_id, node_id="comp", message={"UpdateParams": body})
        # compositord suppresses nothing: the sender gets its own event, carrying its ack.
        await until(
            lambda: any(
                e.get("event") == "nodeparamschanged" and e["params"].get("_acks", {}).get(kit.nonce) == rev for e in kit.events
            )
        )
        assert (await kit.load(session_id))["nodes"]["comp"]["params"]["background"] == "#00FF00FF"
    assert kit.errors == []


async def test_compositords_own_clients_get_the_shapes_they_always_got(compositord_daemon: RunningDaemon) -> None:
    """The same events reach both dialects at once, each in its own shapes."""
    session_id = compositord_daemon.session_id
    async with streamkit_client(streamkit_url(compositord_daemon)) as kit, open_client(compositord_daemon.url) as own:
        await own.get_pipeline(session_id)
        await own.tune(session_id, "comp", {"text_overlays": [{"id": "t", "text": "x", "color": "#FF000080"}]})

        async def first_own(name: str) -> dict[str, Any]:
            async for event in own.events():
                if event.name == name and event.node_id == "comp" and event.raw is not None:
                    return dict(event.raw.payload)
            raise AssertionError("events ended")

        with trio.fail_after(10):
            own_params = await first_own("nodeparamschanged")
            own_view = await first_own("nodeviewdataupdated")
        await until(lambda: any(e.get("event") == "nodeparamschanged" for e in kit.events))
    assert own_params["params"]["text_overlays"][0]["color"] == "#FF000080"
    assert "font" not in own_params["params"]["text_overlays"][0]
    assert isinstance(own_view["timestamp"], float)
    kit_params = next(e for e in kit.events if e.get("event") == "nodeparamschanged")
    assert kit_params["params"]["text_overlays"][0]["color"] == [255, 0, 0, 128]


@asynccontextmanager
async def daemon_with_token(tmp_path: Path, pipeline: dict[str, Any]) -> AsyncIterator[RunningDaemon]:
    """With a bearer token and an Origin allowlist: the StreamKit routes take the same auth as the WebSocket."""
    settings = settings_for(tmp_path / "state", pipeline, token="s3cret", allowed_origins=frozenset({"http://ui.example"}))
    async with trio.open_nursery() as nursery:
        yield await start_daemon(nursery, settings)
        nursery.cancel_scope.cancel()


async def test_the_http_api_has_the_websockets_auth(tmp_path: Path, compositord_pipeline: dict[str, Any]) -> None:
    async with daemon_with_token(tmp_path, compositord_pipeline) as daemon:
        for path in ("/api/v1/sessions", "/api/v1/schema/nodes", "/api/v1/schema/packets"):
            assert (await http_get(daemon, path))[0] == 401
            assert (await http_get(daemon, path + "?token=wrong"))[0] == 401
            bearer = [(b"authorization", b"Bearer s3cret")]
            assert (await http_get(daemon, path, [*bearer, (b"origin", b"http://evil.example")]))[0] == 403
            status, body = await http_get(daemon, path, [*bearer, (b"origin", b"http://ui.example")])
            assert status == 200 and isinstance(body, list)
        status, sessions = await http_get(daemon, "/api/v1/sessions?token=s3cret")
        assert status == 200
        assert [(s["id"], s["name"]) for s in sessions] == [(daemon.session_id, daemon.session_id)]
        assert sessions[0]["created_at"].endswith("Z")
        status, packets = await http_get(daemon, "/api/v1/schema/packets?token=s3cret")
        assert status == 200 and packets == streamkit.packet_types()


async def test_an_unknown_dialect_is_refused_at_the_handshake(compositord_daemon: RunningDaemon) -> None:
    for target in ("/api/v1/control?compat=slack", "/api/v1/control?compat=streamkit&compat=other"):
        request = h11.Request(
            method="GET",
            target=target,
            headers=[
                (b"host", b"localhost"),
                (b"connection", b"Upgrade"),
                (b"upgrade", b"websocket"),
                (b"sec-websocket-version", b"13"),
                (b"sec-websocket-key", base64.b64encode(b"0123456789abcdef")),
            ],
        )
        (response, body), *_ = await plain_http(compositord_daemon.host, compositord_daemon.port, [request])
        assert response.status_code == 400 and b"dialect" in body
    # The header asks for the dialect as the query parameter does: events come in StreamKit's shapes.
    header = [(streamkit.COMPAT_HEADER.encode(), b"streamkit")]
    async with await RawClient.connect(compositord_daemon.host, compositord_daemon.port, "/api/v1/control", header) as raw:
        overlay = {"text_overlays": [{"id": "t", "text": "x", "color": "#FF000080"}]}
        tune = {"action": "tunenode", "session_id": compositord_daemon.session_id, "node_id": "comp"}
        await raw.send(TextMessage(json.dumps({"type": "request", "payload": {**tune, "message": {"PatchParams": overlay}}})))
        with trio.fail_after(10):
            while True:
                event = await raw.next_event()
                if isinstance(event, TextMessage) and '"nodeparamschanged"' in event.data:
                    assert json.loads(event.data)["payload"]["params"]["text_overlays"][0]["color"] == [255, 0, 0, 128]
                    break


async def test_an_empty_session_is_created_listed_loaded_and_grows(compositord_daemon: RunningDaemon) -> None:
    async with streamkit_client(streamkit_url(compositord_daemon)) as kit, open_client(compositord_daemon.url) as own:
        created = await kit.request("createsession", name="empty")
        session_id = created["session_id"]
        listed = await kit.request("listsessions")
        pipeline = await kit.load(session_id)
        added = await kit.request("addnode", session_id=session_id, node_id="bars", kind="video::colorbars", params=None)
        assert added["action"] == "success", added
        # StreamKit's UI shows a node it is told of as "Initializing" until a state comes: it is told at once.
        await until(lambda: kit.states.get((session_id, "bars")) == "Running", what="the new node's state")
        await own.add_node(session_id, "more", "video::colorbars")
        await until(lambda: kit.states.get((session_id, "more")) == "Running", what="the other new node's state")
        own_events = []
        with trio.move_on_after(0.3):
            async for event in own.events():
                own_events.append(event.name)
    assert created["name"] == "empty"
    assert {"session_id": session_id, "id": session_id} == {
        k: v for s in listed["sessions"] if s["id"] == session_id for k, v in s.items() if k in ("session_id", "id")
    }
    assert pipeline["nodes"] == {} and pipeline["mode"] == "dynamic" and pipeline["name"] == "empty"
    assert "nodeadded" in own_events and "nodestatechanged" not in own_events, "compositord's clients get no such event"
    assert kit.errors == []
