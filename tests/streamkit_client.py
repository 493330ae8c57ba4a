"""A client that behaves as StreamKit's web UI does, for the compatibility tests (issue #16).

Written for this project from the message shapes and client rules in
StreamKit's public source (``ui/src``: the WebSocket service, the config
revision counters, the compositor's layer parsers, serializers and commit
path, the server-sync gates); no StreamKit code is copied. What it does, as
that UI does:

- one connection, a new sender nonce (UUID v4) and per-node revision counters
  from 0 at every connect; every request has a ``correlation_id``; a request
  waits 5 s for its answer;
- ``getpipeline`` is read from ``payload.pipeline`` only (nodes with params
  and state, connections, ``view_data``);
- ``nodeparamschanged`` goes through the stale-echo gate (mine, and ``_rev``
  at or below my counter: dropped), then its ``_`` keys are stripped and it is
  deep-merged into the node's params; ``nodeviewdataupdated`` is dropped when
  it is mine (or has an empty sender) and older than my counter;
- a compositor edit sends the whole config (``buildConfig``: the node's params
  with the layers and overlays serialized from the editor's state) stamped
  ``_sender`` / ``_rev`` as ``tunenodeasync`` ``UpdateParams``, or
  ``tunenodesilent`` as older versions do; overlays with ``color`` as
  ``[r, g, b, a]``, ``font_name``, mirrors, and images either as ``asset_path``
  with an ``id`` or, as older versions, as ``data_base64`` without one.

Every ``error`` it receives (response or event) is kept in ``errors``.
"""

from __future__ import annotations

import json
import math
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

REQUEST_TIMEOUT = 5.0  # StreamKit's UI rejects a request after 5 s

DEFAULT_FONT_NAME = "dejavu-sans"
DEFAULT_TEXT_COLOR = [255, 255, 255, 255]


def deep_merge(target: Any, source: Any) -> Any:
    """Objects merged key by key; anything else in ``source`` replaces (StreamKit's params store does this)."""
    if not (isinstance(target, Mapping) and isinstance(source, Mapping)):
        return json.loads(json.dumps(source))
    merged = dict(target)
    for key, value in source.items():
        merged[key] = deep_merge(merged[key], value) if key in merged else json.loads(json.dumps(value))
    return merged


def without_private(value: Mapping[str, Any]) -> dict[str, Any]:
    return {key: item for key, item in value.items() if not key.startswith("_")}


@dataclass
class StreamKitClient:
    ws: WebSocketConnection
    nonce: str = field(default_factory=lambda: str(uuid.uuid4()))
    revs: dict[str, int] = field(default_factory=dict)  # per node, as useConfigRev
    params: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    view_data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    states: dict[tuple[str, str], Any] = field(default_factory=dict)
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    _waiting: dict[str, trio.MemorySendChannel[dict[str, Any]]] = field(default_factory=dict)

    # -------------------------------------------------------------- requests

    async def request(self, action: str, **payload: Any) -> dict[str, Any]:
        """One request; its response's ``payload`` (an error response is returned as it is)."""
        correlation_id = str(uuid.uuid4())
        send, receive = trio.open_memory_channel[dict[str, Any]](1)
        self._waiting[correlation_id] = send
        await self.ws.send_message(
            json.dumps({"type": "request", "correlation_id": correlation_id, "payload": {"action": action, **payload}})
        )
        try:
            with trio.fail_after(REQUEST_TIMEOUT):
                return await receive.receive()
        finally:
            self._waiting.pop(correlation_id, None)

    async def fire_and_forget(self, action: str, **payload: Any) -> None:
        message = {"type": "request", "correlation_id": str(uuid.uuid4()), "payload": {"action": action, **payload}}
        await self.ws.send_message(json.dumps(message))

    def bump_rev(self, node_id: str) -> int:
        self.revs[node_id] = self.revs.get(node_id, 0) + 1
        return self.revs[node_id]

    async def load(self, session_id: str) -> dict[str, Any]:
        """``getpipeline`` as the UI reads it: ``payload.pipeline`` seeds params, node states and view data."""
        response = await self.request("getpipeline", session_id=session_id)
        pipeline = response.get("pipeline")
        if not isinstance(pipeline, dict):
            raise AssertionError(f"no pipeline object in {response}")
        self.pipelines[session_id] = pipeline
        for node_id, node in pipeline["nodes"].items():
            self.params[(session_id, node_id)] = dict(node["params"] or {})
            if node.get("state") is not None:
                self.states[(session_id, node_id)] = node["state"]
        for node_id, data in (pipeline.get("view_data") or {}).items():
            self.view_data[(session_id, node_id)] = data
        return pipeline

    # -------------------------------------------------------------- what arrives

    async def read_messages(self) -> None:
        while True:
            try:
                text = await self.ws.get_message()
            except ConnectionClosed:
                return
            message = json.loads(text)
            payload = message.get("payload", {})
            if message.get("type") == "response" and payload.get("action") == "error":
                self.errors.append(payload)
            waiting = self._waiting.pop(message.get("correlation_id") or "", None)
            if message.get("type") == "response" and waiting is not None:
                waiting.send_nowait(payload)
                continue
            if message.get("type") == "event":
                self.events.append(payload)
                self._on_event(payload)

    def _on_event(self, payload: dict[str, Any]) -> None:
        name = payload.get("event")
        key = (str(payload.get("session_id")), str(payload.get("node_id")))
        if name == "error":
            self.errors.append(payload)
        elif name == "nodeparamschanged":
            params = payload["params"]
            if params.get("_sender") == self.nonce and params.get("_rev", math.inf) <= self.revs.get(key[1], 0):
                return  # the stale-echo gate
            self.params[key] = deep_merge(self.params.get(key, {}), without_private(params))
        elif name == "nodeviewdataupdated":
            data = payload["data"]
            mine = data.get("_sender") in ("", self.nonce)
            if mine and isinstance(data.get("_rev"), int) and data["_rev"] < self.revs.get(key[1], 0):
                return  # stale view data of my own earlier edit
            self.view_data[key] = data
        elif name == "nodestatechanged":
            self.states[key] = payload["state"]


@asynccontextmanager
async def streamkit_client(url: str) -> AsyncIterator[StreamKitClient]:
    """Connected, reading in the background; ``url`` should ask for the dialect (``?compat=streamkit``)."""
    async with open_websocket_url(url) as ws, trio.open_nursery() as nursery:
        client = StreamKitClient(ws)
        nursery.start_soon(client.read_messages)
        yield client
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ the compositor editor


def _rect(state: Mapping[str, Any]) -> dict[str, int]:
    return {
        "x": round(state["x"]),
        "y": round(state["y"]),
        "width": max(1, round(state["width"])),
        "height": max(1, round(state["height"])),
    }


def _spatial(state: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "opacity": round(state["opacity"] * 100) / 100 if state["visible"] else 0,
        "rotation_degrees": round(state["rotation"] * 10) / 10,
        "z_index": state["z_index"],
        "mirror_horizontal": state["mirror_horizontal"],
        "mirror_vertical": state["mirror_vertical"],
    }


def _transform(raw: Mapping[str, Any], width: float, height: float, z_index: int) -> dict[str, Any]:
    rect = raw.get("rect") or {}
    return {
        "x": rect.get("x", 0),
        "y": rect.get("y", 0),
        "width": rect.get("width") or width,
        "height": rect.get("height") or height,
        "opacity": raw.get("opacity", 1.0),
        "rotation": raw.get("rotation_degrees", 0),
        "z_index": raw.get("z_index", z_index),
        "mirror_horizontal": raw.get("mirror_horizontal", False),
        "mirror_vertical": raw.get("mirror_vertical", False),
        "visible": True,
    }


@dataclass
class CompositorEditor:
    """The compositor view's state for one node: layers and overlays parsed from params, committed whole."""

    client: StreamKitClient
    session_id: str
    node_id: str
    image_style: str = "asset_path"  # or "data_base64" (older StreamKit: inline images, no ids)
    silent: bool = False  # send tunenodesilent, as older StreamKit does during drags
    layers: list[dict[str, Any]] = field(default_factory=list)
    texts: list[dict[str, Any]] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.parse()

    @property
    def node_params(self) -> dict[str, Any]:
        return self.client.params[(self.session_id, self.node_id)]

    def parse(self) -> None:
        params = self.node_params
        width, height = params.get("width", 1280), params.get("height", 720)
        self.layers = [
            {
                "id": pin,
                **_transform(config, width, height, 0),
                "crop_zoom": config.get("crop_zoom", 1.0),
                "crop_x": config.get("crop_x", 0.5),
                "crop_y": config.get("crop_y", 0.5),
                "crop_shape": config.get("crop_shape", "rect"),
            }
            for pin, config in (params.get("layers") or {}).items()
        ]
        self.texts = [
            {
                "id": raw.get("id", f"text_{i}"),
                "text": raw.get("text", ""),
                "color": raw.get("color", DEFAULT_TEXT_COLOR),
                "font_size": raw.get("font_size", 24),
                "font_name": raw.get("font_name", DEFAULT_FONT_NAME),
                **_transform(raw, 300, 60, 100 + i),
            }
            for i, raw in enumerate(params.get("text_overlays") or [])
        ]
        self.images = [
            {
                "id": raw.get("id", f"img_{i}"),
                "asset_path": raw.get("asset_path", ""),
                "data_base64": raw.get("data_base64", ""),
                **_transform(raw, 200, 200, 200 + i),
            }
            for i, raw in enumerate(params.get("image_overlays") or [])
        ]

    def add_text(self, text: str, *, color: list[int], x: int, y: int, mirror_horizontal: bool = False) -> None:
        self.texts.append(
            {
                "id": str(uuid.uuid4()),
                "text": text,
                "color": color,
                "font_size": 24,
                "font_name": DEFAULT_FONT_NAME,
                **_transform({"rect": {"x": x, "y": y}, "mirror_horizontal": mirror_horizontal}, 300, 60, 100 + len(self.texts)),
            }
        )

    def add_image(self, *, x: int, y: int, width: int, height: int, asset_path: str = "", data_base64: str = "") -> None:
        self.images.append(
            {
                "id": str(uuid.uuid4()),
                "asset_path": asset_path,
                "data_base64": data_base64,
                **_transform({"rect": {"x": x, "y": y, "width": width, "height": height}}, 200, 200, 200 + len(self.images)),
            }
        )

    def config(self) -> dict[str, Any]:
        """``buildConfig``: the node's params with the layers and overlays serialized from this state."""
        layers = {
            layer["id"]: {
                "rect": _rect(layer),
                **_spatial(layer),
                "crop_zoom": round(layer["crop_zoom"] * 100) / 100,
                "crop_x": round(layer["crop_x"] * 100) / 100,
                "crop_y": round(layer["crop_y"] * 100) / 100,
                "crop_shape": layer["crop_shape"],
            }
            for layer in self.layers
        }
        texts = [
            {
                "id": t["id"],
                "text": t["text"],
                "rect": _rect(t),
                "color": t["color"],
                "font_size": t["font_size"],
                "font_name": t["font_name"],
                **_spatial(t),
            }
            for t in self.texts
        ]
        if self.image_style == "data_base64":
            images = [{"data_base64": i["data_base64"], "rect": _rect(i), **_spatial(i)} for i in self.images]
        else:
            images = [{"id": i["id"], "asset_path": i["asset_path"], "rect": _rect(i), **_spatial(i)} for i in self.images]
        return {**self.node_params, "layers": layers, "text_overlays": texts, "image_overlays": images}

    async def commit(self) -> int:
        """The whole config, stamped, fire and forget; returns the rev."""
        rev = self.client.bump_rev(self.node_id)
        body = {**self.config(), "_sender": self.client.nonce, "_rev": rev}
        action = "tunenodesilent" if self.silent else "tunenodeasync"
        await self.client.fire_and_forget(
            action, session_id=self.session_id, node_id=self.node_id, message={"UpdateParams": body}
        )
        return rev

    def move_layer(self, layer_id: str, x: float, y: float) -> None:
        layer = next(layer for layer in self.layers if layer["id"] == layer_id)
        layer["x"], layer["y"] = x, y
