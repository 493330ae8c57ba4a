// Direct tests of daemon/panel/causal.js; the recorded histories are in causal_fixture.test.mjs.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  ClientCausalState,
  LocalProtocolError,
  MAX_PENDING_PER_POINTER,
  NodeMask,
  PARAMS_CHANNEL,
  RemoteProtocolError,
  Stamp,
  VIEW_CHANNEL,
  joinPointer,
  leavesToPatch,
  mergePatch,
  newNonce,
  patchLeaves,
  resolvePointer,
  splitPointer,
  stripPrivate,
  tuneMessage,
  tuneRequest,
} from "../../daemon/panel/causal.js";

// Every example of RFC 7396 Appendix A (original, patch, result).
const RFC7396_APPENDIX_A = [
  ['{"a":"b"}', '{"a":"c"}', '{"a":"c"}'],
  ['{"a":"b"}', '{"b":"c"}', '{"a":"b","b":"c"}'],
  ['{"a":"b"}', '{"a":null}', "{}"],
  ['{"a":"b","b":"c"}', '{"a":null}', '{"b":"c"}'],
  ['{"a":["b"]}', '{"a":"c"}', '{"a":"c"}'],
  ['{"a":"c"}', '{"a":["b"]}', '{"a":["b"]}'],
  ['{"a":{"b":"c"}}', '{"a":{"b":"d","c":null}}', '{"a":{"b":"d"}}'],
  ['{"a":[{"b":"c"}]}', '{"a":[1]}', '{"a":[1]}'],
  ['["a","b"]', '["c","d"]', '["c","d"]'],
  ['{"a":"b"}', '["c"]', '["c"]'],
  ['{"a":"foo"}', "null", "null"],
  ['{"a":"foo"}', '"bar"', '"bar"'],
  ['{"e":null}', '{"a":1}', '{"e":null,"a":1}'],
  ["[1,2]", '{"a":"b","c":null}', '{"a":"b"}'],
  ["{}", '{"a":{"bb":{"ccc":null}}}', '{"a":{"bb":{}}}'],
];

test("mergePatch follows RFC 7396 and mutates neither argument", () => {
  for (const [original, patch, result] of RFC7396_APPENDIX_A) {
    const target = JSON.parse(original);
    const patchDoc = JSON.parse(patch);
    assert.deepEqual(mergePatch(target, patchDoc), JSON.parse(result), `${original} + ${patch}`);
    assert.deepEqual(target, JSON.parse(original));
    assert.deepEqual(patchDoc, JSON.parse(patch));
  }
});

test("a __proto__ key from the wire stays an ordinary key", () => {
  const patch = JSON.parse('{"__proto__": {"polluted": 1}}');
  const merged = mergePatch({}, patch);
  assert.deepEqual(Object.keys(merged), ["__proto__"]);
  assert.equal(Object.getPrototypeOf(merged), Object.prototype);
  assert.equal({}.polluted, undefined);
  assert.deepEqual(leavesToPatch({ "/__proto__/x": 1 }), JSON.parse('{"__proto__": {"x": 1}}'));
});

test("pointers escape, split and resolve as RFC 6901 says", () => {
  assert.equal(joinPointer("/layers", "a/b", "c~d", 0), "/layers/a~1b/c~0d/0");
  assert.deepEqual(splitPointer("/layers/a~1b/c~0d/0"), ["layers", "a/b", "c~d", "0"]);
  assert.deepEqual(splitPointer(""), []);
  assert.throws(() => splitPointer("no-slash"), LocalProtocolError);
  const doc = { layers: [{ id: "in_0" }], "a/b": 1 };
  assert.equal(resolvePointer(doc, "/layers/0/id"), "in_0");
  assert.equal(resolvePointer(doc, "/a~1b"), 1);
  assert.equal(resolvePointer(doc, "/layers/1/id", "missing"), "missing");
  assert.equal(resolvePointer(doc, "/toString", "missing"), "missing");
  assert.deepEqual(patchLeaves({ a: { b: null, c: {} }, d: 1 }), { "/a/b": null, "/a/c": {}, "/d": 1 });
  assert.deepEqual(patchLeaves({}), {});
  assert.throws(() => leavesToPatch({ "": {} }), LocalProtocolError);
});

test("stripPrivate drops _ keys at any depth and copies", () => {
  const value = { _a: 1, b: [{ _c: 2, d: 3 }], e: { _f: { g: 1 } } };
  assert.deepEqual(stripPrivate(value), { b: [{ d: 3 }], e: {} });
  assert.equal(value._a, 1);
});

test("stamps are checked, frozen and serialise to the wire keys", () => {
  const stamp = new Stamp("a".repeat(128), 2 ** 53);
  assert.deepEqual(JSON.parse(JSON.stringify(stamp)), { _sender: "a".repeat(128), _rev: 2 ** 53 });
  assert.throws(() => { stamp.rev = 3; }, TypeError);
  for (const [sender, rev, path] of [["", 1, "/_sender"], ["a".repeat(129), 1, "/_sender"], [7, 1, "/_sender"], ["s", 0, "/_rev"], ["s", 1.5, "/_rev"], ["s", true, "/_rev"], ["s", 2 ** 53 + 2, "/_rev"]]) {
    assert.throws(() => new Stamp(sender, rev), (error) => error instanceof RemoteProtocolError && error.path === path);
  }
});

test("nonces are UUID v4, also without crypto.randomUUID (an insecure context)", () => {
  const v4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  assert.match(newNonce(), v4);
  const real = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  try {
    Object.defineProperty(globalThis, "crypto", { value: { getRandomValues: (bytes) => bytes.fill(0xff) }, configurable: true });
    assert.equal(newNonce(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    Object.defineProperty(globalThis, "crypto", { value: undefined, configurable: true });
    assert.throws(() => newNonce(), LocalProtocolError);
  } finally {
    Object.defineProperty(globalThis, "crypto", real);
  }
  const state = new ClientCausalState();
  const first = state.nonce;
  state.reconnected();
  assert.notEqual(state.nonce, first);
  assert.throws(() => state.reconnected(state.nonce), LocalProtocolError);
});

test("a refusal that overtakes the paced ack of an earlier rev uncovers that rev (#18)", () => {
  const mask = new NodeMask(PARAMS_CHANNEL, { layers: { in_1: { opacity: 0.1 } } });
  mask.edit({ "/layers/in_1/opacity": 0.4 }, 1);
  mask.edit({ "/layers/in_1/opacity": 1.5 }, 2);
  mask.onRefused(2);
  assert.deepEqual(mask.shown(), { layers: { in_1: { opacity: 0.4 } } });
  assert.deepEqual([...mask.pending], [["/layers/in_1/opacity", [[1, 0.4]]]]);
  mask.onServerState({ layers: { in_1: { opacity: 0.4 } } }, { me: 2 }, "me");
  assert.equal(mask.pending.size, 0);
});

test("entries per pointer are bounded, the oldest dropped first", () => {
  const mask = new NodeMask(PARAMS_CHANNEL, { width: 0 });
  for (let rev = 1; rev <= MAX_PENDING_PER_POINTER + 2; rev += 1) mask.edit({ "/width": rev }, rev);
  const kept = mask.pending.get("/width");
  assert.equal(kept.length, MAX_PENDING_PER_POINTER);
  assert.deepEqual(kept[0], [3, 3]);
  for (const [rev] of [...kept]) mask.onRefused(rev);
  assert.deepEqual(mask.shown(), { width: 0 });
});

test("a rev that does not grow at a pointer is our own bug and changes nothing", () => {
  const mask = new NodeMask();
  mask.edit({ "/a": 1 }, 2);
  assert.throws(() => mask.edit({ "/b": 1, "/a": 2 }, 2), LocalProtocolError);
  assert.throws(() => mask.edit({ "/a": 1 }, 0), LocalProtocolError);
  assert.throws(() => mask.edit({ bad: 1 }, 3), LocalProtocolError);
  assert.deepEqual([...mask.pending], [["/a", [[2, 1]]]]);
  assert.throws(() => new NodeMask("audio"), LocalProtocolError);
});

test("malformed events and pipelines are refused with their path and change nothing", () => {
  const state = new ClientCausalState("me");
  state.onEvent("comp", PARAMS_CHANNEL, { width: 1, _acks: {} });
  for (const [data, path] of [[[], "/payload/params"], [{ _acks: [] }, "/payload/params/_acks"], [{ _acks: { x: "1" } }, "/payload/params/_acks/x"]]) {
    assert.throws(() => state.onEvent("comp", PARAMS_CHANNEL, data, { path: "/payload/params" }), (error) => error.path === path);
  }
  const bad = { comp: { params: { width: 2 }, acks: {} }, bars: { params: { pattern: "x" }, retired_acks: { s: true } } };
  assert.throws(() => state.onPipeline(bad), (error) => error.path === "/payload/nodes/bars/retired_acks/s");
  assert.throws(() => state.onPipeline({ comp: { params: [] } }), (error) => error.path === "/payload/nodes/comp/params");
  assert.throws(() => state.onPipeline({ comp: { params: {}, view_data: 3 } }), (error) => error.path === "/payload/nodes/comp/view_data");
  assert.throws(() => state.onPipeline([]), RemoteProtocolError);
  assert.deepEqual(state.shown("comp"), { width: 1 });
});

test("after a reconnect: resync, then the resend messages in order, stamped under the new nonce", () => {
  const state = new ClientCausalState("old");
  state.onPipeline({ comp: { params: { width: 1 }, acks: {} } });
  state.editPatch("comp", { width: 10 });
  state.editReplace("comp", { width: 20, _ui: 1 });
  state.editPatch("comp", { height: 3 });
  state.reconnected("new");
  assert.deepEqual(state.shown("comp"), { width: 20, height: 3 });
  state.onPipeline({ comp: { params: { width: 10 }, acks: {}, retired_acks: { old: 1 } } });
  const messages = state.takeResendMessages();
  assert.deepEqual(
    messages.map(({ body, replace, stamp }) => [body, replace, stamp.toJSON()]),
    [
      [{ width: 20 }, true, { _sender: "new", _rev: 1 }],
      [{ height: 3 }, false, { _sender: "new", _rev: 2 }],
    ],
  );
  assert.deepEqual(tuneMessage(messages[0].body, messages[0].stamp, { replace: true }), { UpdateParams: { width: 20, _sender: "new", _rev: 1 } });
  assert.deepEqual(tuneRequest("s", "comp", { a: 1, _x: 2 }, messages[1].stamp, { correlationId: "c7" }), {
    type: "request",
    correlation_id: "c7",
    payload: { action: "tunenodeasync", session_id: "s", node_id: "comp", message: { PatchParams: { a: 1, _sender: "new", _rev: 2 } } },
  });
  assert.equal(tuneRequest("s", "comp", {}, messages[1].stamp, { sync: true }).payload.action, "tunenode");
  // A transition for this change only rides beside the stamp; a private key of the body never does.
  assert.deepEqual(tuneMessage({ program_scene: "b", _transition: { kind: "fade" } }, messages[1].stamp, { transition: { kind: "cut" } }), {
    PatchParams: { program_scene: "b", _sender: "new", _rev: 2, _transition: { kind: "cut" } },
  });
  state.onRefused("comp", 2);
  assert.deepEqual(state.shown("comp"), { width: 20 });
  assert.deepEqual(state.takeResendMessages(), []);
});

test("a replace and patches of one message go as the replace, then the patch", () => {
  const state = new ClientCausalState("old");
  state.mask("comp").edit({ "": { width: 5 }, "/height": 6 }, 1); // only a hand-built mask has both
  state.reconnected("new");
  const messages = state.takeResendMessages();
  assert.deepEqual(messages.map(({ body, replace }) => [body, replace]), [[{ width: 5 }, true], [{ height: 6 }, false]]);
});

test("the view channel predicts a layer rect only where the layout is the rect", () => {
  const state = new ClientCausalState("me");
  state.editPatch("comp", { layers: { in_0: { aspect_fit: false, rect: { x: 1 } } } });
  assert.equal(state.hasMask("comp", VIEW_CHANNEL), false);
  state.onEvent("comp", VIEW_CHANNEL, { canvas_width: 10, _acks: {} });
  state.editPatch("comp", { layers: { in_0: { aspect_fit: false, rect: { x: 2 } } } });
  assert.equal(state.mask("comp", VIEW_CHANNEL).pending.size, 0);
  state.onEvent("comp", VIEW_CHANNEL, { layers: [{ id: "in_0", x: 0 }, "not a layer"], _acks: {} });
  const stamp = state.editPatch("comp", { layers: { in_0: { aspect_fit: false, rect: { x: 30, y: "no" } } } });
  assert.deepEqual(state.shown("comp", VIEW_CHANNEL), { layers: [{ id: "in_0", x: 30 }, "not a layer"] });
  state.onRefused("comp", stamp.rev);
  assert.deepEqual(state.shown("comp", VIEW_CHANNEL), { layers: [{ id: "in_0", x: 0 }, "not a layer"] });
  state.onRefused("unknown-node", 1);
  assert.deepEqual(state.nodeIds(), ["comp"]);
  state.forgetNode("comp");
  assert.deepEqual(state.nodeIds(), []);
  assert.equal(state.lastRev("comp"), 0);
});

test("the view channel follows list indices and deletes as the Python mask does", () => {
  const layout = { layers: [{ id: "in_0", x: 0 }, { id: "in_1", x: 5, extra: 1 }] };
  const mask = new NodeMask(VIEW_CHANNEL, layout);
  mask.edit({ "/layers/1/x": 40, "/layers/1/extra": null, "/layers/0/missing": null }, 1);
  assert.deepEqual(mask.shown(), { layers: [{ id: "in_0", x: 0 }, { id: "in_1", x: 40 }] });
  assert.deepEqual(layout.layers[1], { id: "in_1", x: 5, extra: 1 });
  mask.edit({ "": null }, 2);
  assert.equal(mask.shown(), null);
});
