"""sink::preview through the daemon: ``getpreview`` answers a JPEG of the output
(size from max_width, the known colour), ``subscribepreview`` brings
``nodepreviewupdated`` at no more than max_fps to that connection only, and
``unsubscribepreview`` stops them; wrong nodes are refused with their path."""

from __future__ import annotations

import base64
import io
from typing import Any

import numpy as np
import pytest
import trio
from PIL import Image
from trio_websocket import open_websocket_url

from compositord.tests.sink_helpers import SOLID, SOLID_RGB, Peer

pytestmark = pytest.mark.gl

MAX_FPS = 5.0
# JPEG at quality 90 of a flat colour, then BT.709 YUV -> RGB: a few levels.
COLOUR_TOLERANCE = 6.0


@pytest.fixture
def compositord_pipeline() -> dict[str, Any]:
    return {
        "nodes": {
            "bars": {"kind": "video::colorbars", "params": {"width": 320, "height": 180, "pattern": "solid", "color": SOLID}},
            "comp": {"kind": "video::compositor", "params": {"width": 320, "height": 180, "fps": 30, "output_format": "nv12"}},
            "thumbs": {"kind": "sink::preview", "params": {"max_width": 160, "quality": 90, "max_fps": MAX_FPS}},
        },
        "connections": [
            {"from_node": "bars", "from_pin": "out", "to_node": "comp", "to_pin": "in_0"},
            {"from_node": "comp", "from_pin": "out", "to_node": "thumbs", "to_pin": "in"},
        ],
    }


def decode_jpeg(payload: dict[str, Any]) -> np.ndarray:
    assert payload["content_type"] == "image/jpeg"
    image = Image.open(io.BytesIO(base64.b64decode(payload["data"])))
    assert image.format == "JPEG"
    assert image.size == (payload["width"], payload["height"])
    return np.asarray(image.convert("RGB"))


async def test_getpreview_and_subscription(compositord_daemon: Any) -> None:
    session = compositord_daemon.session_id
    async with open_websocket_url(compositord_daemon.url) as ws_a, open_websocket_url(compositord_daemon.url) as ws_b:
        subscriber, bystander = Peer(ws_a), Peer(ws_b)
        with trio.fail_after(10):
            while True:
                answer = await bystander.request("getpreview", session_id=session, node_id="thumbs")
                if answer["action"] == "preview":
                    break
                assert answer["code"] == "not_found"  # not encoded yet
                await trio.sleep(0.05)
        assert (answer["width"], answer["height"]) == (160, 90)
        assert answer["frame_number"] >= 1 and answer["media_time"] >= 0
        pixels = decode_jpeg(answer)
        centre = pixels[20:70, 40:120].reshape(-1, 3).mean(axis=0)
        assert np.all(np.abs(centre - np.array(SOLID_RGB)) <= COLOUR_TOLERANCE), centre

        assert (await subscriber.request("subscribepreview", session_id=session, node_id="thumbs"))["action"] == "success"
        window = 1.6
        updates = await subscriber.previews(window)
        assert updates, "a subscriber gets nodepreviewupdated"
        assert len(updates) <= MAX_FPS * window + 1, f"{len(updates)} previews in {window} s exceeds max_fps {MAX_FPS}"
        frame_numbers = [u["frame_number"] for u in updates]
        assert frame_numbers == sorted(frame_numbers) and len(set(frame_numbers)) == len(frame_numbers)
        decode_jpeg(updates[-1])
        assert await bystander.previews(0.5) == [], "a connection that did not subscribe gets none"

        assert (await subscriber.request("unsubscribepreview", session_id=session, node_id="thumbs"))["action"] == "success"
        await subscriber.previews(0.3)  # one may have been queued before the unsubscribe
        assert await subscriber.previews(0.6) == []

        wrong_kind = await subscriber.request("getpreview", session_id=session, node_id="comp")
        assert (wrong_kind["code"], wrong_kind["path"]) == ("invalid_params", "/payload/node_id")
        missing = await subscriber.request("subscribepreview", session_id=session, node_id="nope")
        assert (missing["code"], missing["path"]) == ("not_found", "/payload/node_id")


async def test_client_library_previews(compositord_daemon: Any, compositord_client: Any) -> None:
    client, session = compositord_client, compositord_daemon.session_id
    with trio.fail_after(10):
        while True:
            try:
                jpeg, info = await client.get_preview(session, "thumbs")
                break
            except Exception as exc:  # CompositordError not_found until the first thumbnail
                assert getattr(exc, "code", None) == "not_found", exc
                await trio.sleep(0.05)
    assert jpeg[:2] == b"\xff\xd8" and (info["width"], info["height"]) == (160, 90)
    await client.subscribe_preview(session, "thumbs")
    with trio.fail_after(5):
        async for event in client.events():
            if event.name == "nodepreviewupdated":
                assert event.node_id == "thumbs" and event.payload["content_type"] == "image/jpeg"
                break
    await client.unsubscribe_preview(session, "thumbs")
