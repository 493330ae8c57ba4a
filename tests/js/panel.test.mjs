// The web panel's modules that need no page: the geometry of the compositor view's boxes and edits, the
// pipeline graph's pins, and the control connection's requests, refusals and reconnect (rule C4) against a
// scripted WebSocket. The causal rules themselves are causal.test.mjs's and causal_fixture.test.mjs's.
import assert from "node:assert/strict";
import { test } from "node:test";

import { boxItems, geometryPatch, layoutPointer, layoutScene, resizedRect, rotationToward, scopedPatch } from "../../daemon/panel/compositor.js";
import { ControlConnection, SUBPROTOCOL, TOKEN_SUBPROTOCOL_PREFIX, paramsPointerOf, tokenSubprotocol } from "../../daemon/panel/control.js";
import { inputPins, statsLine } from "../../daemon/panel/graph.js";
import { CUT, barPosition, barRelease, canTake, cutPatch, sceneList, takePrediction, transitionState } from "../../daemon/panel/scenes.js";

const VIEW = {
  canvas_width: 640,
  canvas_height: 360,
  layers: [
    { id: "in_0", x: 0, y: 0, width: 640, height: 360 },
    { id: "in_1", x: 407, y: 220, width: 213, height: 120 },
  ],
  text_overlays: [{ id: "title", x: 10, y: 20, width: 90, height: 30 }],
};

test("boxes: a layer's params rect wins over the view's, auto-PiP layers and overlays take the view's sizes", () => {
  const params = {
    layers: { in_0: { rect: { x: 5, y: 6, width: 70, height: 80 }, rotation_degrees: 12 }, in_2: { visible: false, rect: { x: 1, y: 2, width: 3, height: 4 } } },
    text_overlays: [{ id: "title", text: "t", rect: { x: 10, y: 20 } }],
  };
  const items = Object.fromEntries(boxItems(params, VIEW).map((item) => [item.key, item]));
  assert.deepEqual(items["layer:in_0"].rect, { x: 5, y: 6, width: 70, height: 80 });
  assert.equal(items["layer:in_0"].rotation, 12);
  assert.deepEqual(items["layer:in_1"].rect, { x: 407, y: 220, width: 213, height: 120 });
  assert.equal(items["layer:in_2"].hidden, true, "an invisible layer with a rect keeps a box");
  assert.deepEqual(items["text:title"].rect, { x: 10, y: 20, width: 90, height: 30 });
  assert.equal(items["text:title"].index, 0);
});

test("edits: a layer gets a whole rounded rect, an overlay its whole list (merge patches replace lists)", () => {
  const params = { text_overlays: [{ id: "a", text: "x", rect: { x: 1, y: 2 } }, { id: "b", text: "y" }] };
  const layer = { kind: "layer", id: "in_1" };
  assert.deepEqual(geometryPatch(params, layer, { rect: { x: 1.4, y: 2.6, width: 0.2, height: 9.5 } }), {
    layers: { in_1: { rect: { x: 1, y: 3, width: 1, height: 10 } } },
  });
  assert.deepEqual(geometryPatch(params, layer, { rotation: 45 }), { layers: { in_1: { rotation_degrees: 45 } } });
  const moved = geometryPatch(params, { kind: "text", id: "a", index: 0 }, { rect: { x: 30, y: 40, width: 90, height: 30 } });
  assert.deepEqual(moved.text_overlays, [{ id: "a", text: "x", rect: { x: 30, y: 40 } }, { id: "b", text: "y" }], "a move keeps the measured size");
  const resized = geometryPatch(params, { kind: "text", id: "b", index: 1 }, { rect: { x: 0, y: 0, width: 50, height: 20 }, resized: true });
  assert.deepEqual(resized.text_overlays[1].rect, { x: 0, y: 0, width: 50, height: 20 });
  assert.deepEqual(params.text_overlays[0].rect, { x: 1, y: 2 }, "the shown params are not changed in place");
  assert.equal(geometryPatch(params, { kind: "image", id: "gone", index: 3 }, { rotation: 1 }), null);
});

const SCENE_PARAMS = {
  scenes: {
    wide: { layers: { in_1: { rect: { x: 5, y: 6, width: 70, height: 80 } } }, text_overlays: [{ id: "title", rect: { x: 1, y: 2 } }] },
    pip: { layers: { in_1: { rect: { x: 300, y: 200, width: 10, height: 10 } } } },
  },
  program_scene: "wide",
  preview_scene: "pip",
  transition: { kind: "fade", duration_ms: 400 },
};

test("scenes: the boxes are the program scene's, and their edits patch that scene", () => {
  assert.equal(layoutScene(SCENE_PARAMS), "wide");
  assert.equal(layoutScene({ layers: {} }), null, "no scenes: the top-level layout");
  assert.equal(layoutScene({ scenes: {}, program_scene: null }), null);
  assert.equal(layoutPointer("wide"), "/scenes/wide");
  assert.equal(layoutPointer("a/b"), "/scenes/a~1b", "a name is one pointer token");
  assert.deepEqual(scopedPatch(null, { layers: {} }), { layers: {} });
  const items = Object.fromEntries(boxItems(SCENE_PARAMS, VIEW).map((item) => [item.key, item]));
  assert.deepEqual(items["layer:in_1"].rect, { x: 5, y: 6, width: 70, height: 80 }, "wide's rect, not pip's");
  assert.equal(items["layer:in_1"].scene, "wide");
  assert.deepEqual(items["text:title"].rect, { x: 1, y: 2, width: 90, height: 30 });
  assert.deepEqual(geometryPatch(SCENE_PARAMS, items["layer:in_1"], { rect: { x: 9, y: 9, width: 70, height: 80 } }), {
    scenes: { wide: { layers: { in_1: { rect: { x: 9, y: 9, width: 70, height: 80 } } } } },
  });
  assert.deepEqual(geometryPatch(SCENE_PARAMS, items["text:title"], { rect: { x: 30, y: 40, width: 90, height: 30 } }), {
    scenes: { wide: { text_overlays: [{ id: "title", rect: { x: 30, y: 40 } }] } },
  });
  // An item keeps the scene it was drawn from: a drag that began in wide goes on editing wide.
  const onPip = { ...SCENE_PARAMS, program_scene: "pip" };
  assert.deepEqual(Object.keys(geometryPatch(onPip, items["layer:in_1"], { rotation: 5 }).scenes), ["wide"]);
});

test("studio mode: the scene list, what a take and a cut send", () => {
  assert.deepEqual(sceneList(SCENE_PARAMS), [
    { name: "wide", program: true, preview: false },
    { name: "pip", program: false, preview: true },
  ]);
  assert.deepEqual(sceneList({ layers: {} }), []);
  assert.equal(canTake(SCENE_PARAMS), true);
  assert.equal(canTake({ ...SCENE_PARAMS, preview_scene: "wide" }), false, "the program scene on preview: nothing to take");
  assert.equal(canTake({ ...SCENE_PARAMS, preview_scene: null }), false);
  assert.deepEqual(takePrediction(SCENE_PARAMS), { program_scene: "pip", preview_scene: "wide" });
  assert.deepEqual(takePrediction({ ...SCENE_PARAMS, transition_position: 0.4 }), {
    program_scene: "pip",
    preview_scene: "wide",
    transition_position: null,
  }, "a take clears the T-bar, as the server does");
  assert.equal(takePrediction({ ...SCENE_PARAMS, preview_scene: null }), null);
  // A cut: one patch of the scenes; the cut itself goes as the edit's `_transition`, so the params keep their fade.
  const other = { ...SCENE_PARAMS, scenes: { ...SCENE_PARAMS.scenes, split: {} } };
  assert.deepEqual(cutPatch(other, "split"), { program_scene: "split" });
  assert.deepEqual(cutPatch({ ...other, transition_position: 0.5 }, "pip"), {
    program_scene: "pip",
    preview_scene: "wide",
    transition_position: null,
  }, "from preview: the two trade places, and the bar is let go");
  assert.deepEqual(CUT, { kind: "cut" });
});

test("the T-bar: positions, letting go, and what the view data says", () => {
  assert.equal(barPosition("0.12345"), 0.123);
  assert.equal(barPosition(-1), 0);
  assert.equal(barPosition(7), 1);
  assert.equal(barPosition("x"), 0);
  assert.equal(barRelease(1), "take");
  assert.equal(barRelease(0.985), "take", "a hand at the end is at the end");
  assert.equal(barRelease(0.5), "hold");
  assert.equal(barRelease(0.01), "clear");
  assert.equal(transitionState({}), "");
  assert.equal(transitionState({ transition: { manual: true, progress: 0.25, from: "wide", to: "pip" } }), "T-bar 25 %: wide → pip");
  assert.equal(transitionState({ transition: { kind: "fade", progress: 0.5, from: "wide", to: "pip", frame: 6, frames: 12 } }), "fade 50 %: wide → pip");
});

test("resize keeps the opposite corner, and with Shift the aspect", () => {
  const start = { x: 100, y: 100, width: 160, height: 90 };
  assert.deepEqual(resizedRect(start, "se", 40, 10, false), { x: 100, y: 100, width: 200, height: 100 });
  assert.deepEqual(resizedRect(start, "nw", 40, 10, false), { x: 140, y: 110, width: 120, height: 80 });
  const kept = resizedRect(start, "se", 80, 0, true);
  assert.ok(Math.abs(kept.width / kept.height - 160 / 90) < 1e-9 && kept.width === 240);
  const fromTopLeft = resizedRect(start, "nw", -80, 0, true);
  assert.equal(fromTopLeft.x + fromTopLeft.width, 260, "the bottom-right corner stays");
  assert.equal(fromTopLeft.y + fromTopLeft.height, 190);
  assert.equal(resizedRect(start, "se", -500, -500, false).width, 1, "never below one pixel");
});

test("rotation is measured clockwise from up, snapped to 15 degrees with Shift", () => {
  const centre = { x: 0, y: 0 };
  assert.equal(rotationToward(centre, { x: 0, y: -10 }, false), 0);
  assert.equal(rotationToward(centre, { x: 10, y: 0 }, false), 90);
  assert.equal(rotationToward(centre, { x: -10, y: 0 }, false), -90);
  assert.equal(Math.abs(rotationToward(centre, { x: 0, y: 10 }, false)), 180);
  assert.equal(rotationToward(centre, { x: 10, y: -9 }, true), 45);
});

test("pins and stats of the graph", () => {
  const compositor = { input_pins: "num_inputs", fields: { num_inputs: { default: 2 } } };
  assert.deepEqual(inputPins(compositor, {}), ["in_0", "in_1"]);
  assert.deepEqual(inputPins(compositor, { num_inputs: 3 }), ["in_0", "in_1", "in_2"]);
  assert.deepEqual(inputPins({ input_pins: ["in"] }, {}), ["in"]);
  assert.equal(statsLine({ fps: 30, render_ms_p99: 4.25, frames_dropped: 2 }), "30 fps · render p99 4.3 ms · dropped 2");
  assert.equal(statsLine(null), "");
});

test("the token travels as base64url, which a subprotocol name may hold", () => {
  const token = "s3cret/token+with=odd chars é";
  const name = tokenSubprotocol(token);
  assert.equal(name, TOKEN_SUBPROTOCOL_PREFIX + Buffer.from(token, "utf8").toString("base64url"));
  assert.match(name, /^[A-Za-z0-9._-]+$/);
  assert.equal(paramsPointerOf("/payload/message/PatchParams/layers/in_1/opacity"), "/layers/in_1/opacity");
  assert.equal(paramsPointerOf("/payload/operations/2/message/UpdateParams"), "");
  assert.equal(paramsPointerOf("/payload/session_id"), null);
});

// --------------------------------------------------------------------------- the connection, scripted

class ScriptedSocket {
  static made = [];
  constructor(url, protocols) {
    this.url = url;
    this.protocols = protocols;
    this.sent = [];
    this.readyState = 0;
    ScriptedSocket.made.push(this);
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code = 1000, reason = "") {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  receive(message) {
    this.onmessage?.({ data: JSON.stringify(message) });
  }
  requests(action) {
    return this.sent.filter((message) => message.payload.action === action);
  }
}

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));
const PIPELINE = (acks = {}, retired = {}, params = {}) => ({
  action: "pipeline",
  session_id: "s",
  nodes: { comp: { kind: "video::compositor", params, acks, retired_acks: retired, state: "ok", seq: 0 } },
  connections: [],
});

async function connected(token = null) {
  ScriptedSocket.made = [];
  const connection = new ControlConnection({ url: "ws://x/api/v1/control", token, WebSocketClass: ScriptedSocket });
  connection.start();
  const socket = ScriptedSocket.made[0];
  socket.open();
  await tick();
  const watching = connection.watch("s");
  const [request] = socket.requests("getpipeline");
  socket.receive({ type: "response", correlation_id: request.correlation_id, payload: PIPELINE() });
  await watching;
  return { connection, socket };
}

test("a connection offers compositord.v1 and the token's subprotocol", async () => {
  const { connection, socket } = await connected("tok");
  assert.deepEqual(socket.protocols, [SUBPROTOCOL, tokenSubprotocol("tok")]);
  assert.equal(connection.status, "open");
  connection.close();
});

test("an edit is shown at once, sent stamped, and a refusal uncovers the value before it", async () => {
  const { connection, socket } = await connected();
  connection.edit("s", "comp", { layers: { in_1: { opacity: 0.5 } } });
  connection.edit("s", "comp", { layers: { in_1: { opacity: 5 } } });
  assert.equal(connection.shown("s", "comp").layers.in_1.opacity, 5);
  const tunes = socket.requests("tunenodeasync");
  assert.equal(tunes.length, 2);
  const second = tunes[1];
  assert.equal(second.payload.message.PatchParams._sender, connection.nonce);
  assert.equal(second.payload.message.PatchParams._rev, 2);
  const refusals = [];
  connection.addEventListener("refused", (event) => refusals.push(event.detail));
  socket.receive({
    type: "response",
    correlation_id: second.correlation_id,
    payload: { action: "error", code: "invalid_params", message: "must be between 0 and 1", path: "/payload/message/PatchParams/layers/in_1/opacity", _sender: connection.nonce, _rev: 2, node_id: "comp" },
  });
  assert.equal(connection.shown("s", "comp").layers.in_1.opacity, 0.5, "the refused value gives way to the one before it");
  assert.equal(refusals[0].pointer, "/layers/in_1/opacity");
  assert.equal(refusals[0].sessionId, "s");
  connection.close();
});

test("a take is stamped, shown as predicted at once, and a refusal uncovers the scenes before it", async () => {
  const { connection, socket } = await connected();
  connection.state("s").onEvent("comp", "params", { ...SCENE_PARAMS, transition_position: 0.6 });
  const taking = connection.take("s", "comp", takePrediction(connection.shown("s", "comp")));
  assert.equal(connection.shown("s", "comp").program_scene, "pip");
  assert.equal(connection.shown("s", "comp").transition_position, undefined, "the bar cleared as predicted");
  const [take] = socket.requests("take");
  assert.deepEqual(take.payload, { action: "take", session_id: "s", node_id: "comp", _sender: connection.nonce, _rev: 1 });
  socket.receive({
    type: "response",
    correlation_id: take.correlation_id,
    payload: { action: "error", code: "invalid_params", message: "no preview_scene to take", path: "/payload/node_id", _sender: connection.nonce, _rev: 1, node_id: "comp" },
  });
  await assert.rejects(taking, /no preview_scene/);
  assert.equal(connection.shown("s", "comp").program_scene, "wide", "refused: back to what the server holds");
  assert.equal(connection.shown("s", "comp").transition_position, 0.6);
  connection.close();
  await assert.rejects(connection.take("s", "comp", null), /not connected/, "never sent while not open");
});

test("reconnect: resync first, re-send what the server did not process, then the edits made meanwhile (C4)", async () => {
  const { connection, socket } = await connected();
  const oldNonce = connection.nonce;
  connection.edit("s", "comp", { layers: { in_1: { rect: { x: 1, y: 0, width: 10, height: 10 } } } }); // rev 1, processed
  connection.edit("s", "comp", { layers: { in_1: { rect: { x: 2, y: 0, width: 10, height: 10 } } } }); // rev 2, lost with the socket
  socket.close(1006, "cut");
  assert.equal(connection.status, "offline");
  connection.edit("s", "comp", { layers: { in_1: { rect: { x: 3, y: 0, width: 10, height: 10 } } } }); // rev 3: offline, not sent
  assert.equal(socket.sent.filter((m) => m.payload.action === "tunenodeasync").length, 2);
  assert.equal(connection.shown("s", "comp").layers.in_1.rect.x, 3, "offline edits are shown");
  await new Promise((resolve) => setTimeout(resolve, 120)); // the first retry comes after 25..50 ms
  const again = ScriptedSocket.made[1];
  assert.ok(again, "it dialled again");
  again.open();
  await tick();
  assert.notEqual(connection.nonce, oldNonce, "a new nonce for the new connection");
  assert.equal(connection.status, "resyncing");
  connection.edit("s", "comp", { layers: { in_1: { opacity: 0.25 } } }); // during the resync: held, still shown
  assert.equal(connection.shown("s", "comp").layers.in_1.opacity, 0.25);
  assert.equal(again.requests("tunenodeasync").length, 0, "nothing is sent before the resync");
  const [resync] = again.requests("getpipeline");
  const serverParams = { layers: { in_1: { rect: { x: 1, y: 0, width: 10, height: 10 } } } };
  again.receive({ type: "response", correlation_id: resync.correlation_id, payload: PIPELINE({}, { [oldNonce]: 1 }, serverParams) });
  await tick();
  await tick();
  const sent = again.requests("tunenodeasync").map((m) => m.payload.message.PatchParams);
  assert.deepEqual(
    sent.map((body) => [body._rev, body.layers.in_1.rect?.x ?? null, body.layers.in_1.opacity ?? null]),
    [
      [1, 2, null],
      [2, 3, null],
      [3, null, 0.25],
    ],
    "revs 2 and 3 of the old nonce again, in order, then the held edit",
  );
  assert.ok(sent.every((body) => body._sender === connection.nonce));
  assert.equal(connection.status, "open");
  connection.close();
});
