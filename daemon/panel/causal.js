// The client rules of causal consistency (docs/PROTOCOL.md section 5, with rule C4 in 5.2)
// for the web panel: stamps, masking of pending edits, refusals,
// whole-document replaces, and the reconnect rule. A port of the client half of
// protocol/causal.py (and of the resync in client/session_state.py), kept in step with it by
// tests/fixtures/causal_histories.json, which both implementations replay.
//
// Sans-IO: plain JSON-shaped data in, plain data out; the caller owns the WebSocket.
//
//   const state = new ClientCausalState();               // a nonce per connection
//   const stamp = state.editPatch("comp", {layers: {in_1: {opacity: 0.4}}});
//   ws.send(tuneRequest(sessionId, "comp", patch, stamp)); // shown at once, masked until acknowledged
//   state.onEvent("comp", "params", payload.params);     // nodeparamschanged; "view" for view data
//   state.onRefused("comp", error._rev);                 // an error naming one of our own revs
//   state.shown("comp");                                 // what to draw
//
// On reconnect: state.reconnected(), then the getpipeline response to state.onPipeline(nodes),
// then send state.takeResendMessages() in order, and only then new edits.

export const PARAMS_CHANNEL = "params";
export const VIEW_CHANNEL = "view";
export const CHANNELS = Object.freeze([PARAMS_CHANNEL, VIEW_CHANNEL]);

export const SENDER_KEY = "_sender";
export const REV_KEY = "_rev";
export const ACKS_KEY = "_acks";

export const MAX_SENDER_LENGTH = 128;
// Revs travel as JSON numbers, held here in a double.
export const MAX_REV = 2 ** 53;
// Entries kept per pointer (and nonce); the oldest goes when a newer one comes (PROTOCOL.md section 5).
export const MAX_PENDING_PER_POINTER = 64;

const RECT_FIELDS = new Set(["x", "y", "width", "height"]);

/** Our own misuse of the API (a bad pointer, a reused rev): a bug in the caller, not in the server. */
export class LocalProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = "LocalProtocolError";
  }
}

/** The server sent something malformed; `path` is the JSON pointer of the bad field. */
export class RemoteProtocolError extends Error {
  constructor(message, path = "") {
    super(message);
    this.name = "RemoteProtocolError";
    this.code = "bad_envelope";
    this.path = path;
  }
}

// --------------------------------------------------------------------------- JSON values

const hasOwn = (object, key) => Object.prototype.hasOwnProperty.call(object, key);

export function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function getOwn(object, key) {
  return hasOwn(object, key) ? object[key] : undefined;
}

// Keys come from the server and the user: "__proto__" must stay an ordinary key.
function setOwn(object, key, value) {
  Object.defineProperty(object, key, { value, writable: true, enumerable: true, configurable: true });
  return object;
}

function copyObject(object) {
  const copy = {};
  for (const [key, value] of Object.entries(object)) setOwn(copy, key, value);
  return copy;
}

function deepCopy(value) {
  if (Array.isArray(value)) return value.map(deepCopy);
  if (isObject(value)) {
    const copy = {};
    for (const [key, child] of Object.entries(value)) setOwn(copy, key, deepCopy(child));
    return copy;
  }
  return value;
}

/** A copy of `value` without keys that start with "_", at any depth (also inside arrays). */
export function stripPrivate(value) {
  if (Array.isArray(value)) return value.map(stripPrivate);
  if (isObject(value)) {
    const copy = {};
    for (const [key, child] of Object.entries(value)) {
      if (!key.startsWith("_")) setOwn(copy, key, stripPrivate(child));
    }
    return copy;
  }
  return value;
}

/** RFC 7396 JSON merge patch; returns a new document and mutates neither argument. */
export function mergePatch(target, patch) {
  if (!isObject(patch)) return deepCopy(patch);
  const result = isObject(target) ? copyObject(target) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else setOwn(result, key, mergePatch(getOwn(result, key), value));
  }
  return result;
}

// --------------------------------------------------------------------------- JSON pointers (RFC 6901)

export function escapeToken(token) {
  return String(token).replaceAll("~", "~0").replaceAll("/", "~1");
}

export function unescapeToken(token) {
  return token.replaceAll("~1", "/").replaceAll("~0", "~");
}

/** `joinPointer("/layers", "in_1", "opacity") === "/layers/in_1/opacity"`. */
export function joinPointer(base, ...tokens) {
  return base + tokens.map((token) => "/" + escapeToken(token)).join("");
}

export function splitPointer(pointer) {
  if (pointer === "") return [];
  if (typeof pointer !== "string" || !pointer.startsWith("/")) {
    throw new LocalProtocolError(`not a JSON pointer: ${JSON.stringify(pointer)}`);
  }
  return pointer.slice(1).split("/").map(unescapeToken);
}

const isIndex = (token, list) => /^[0-9]+$/.test(token) && Number(token) < list.length;

/** The value at `pointer`, or `fallback` when a step is missing. */
export function resolvePointer(document, pointer, fallback = undefined) {
  let node = document;
  for (const token of splitPointer(pointer)) {
    if (isObject(node) && hasOwn(node, token)) node = node[token];
    else if (Array.isArray(node) && isIndex(token, node)) node = node[Number(token)];
    else return fallback;
  }
  return node;
}

/** A copy of `document` with `value` at `pointer`; missing objects on the way are made. */
function withValue(document, pointer, value) {
  const tokens = splitPointer(pointer);
  if (tokens.length === 0) return value;
  const [head, ...tail] = tokens;
  const rest = joinPointer("", ...tail);
  if (Array.isArray(document) && isIndex(head, document)) {
    const copy = document.slice();
    copy[Number(head)] = withValue(document[Number(head)], rest, value);
    return copy;
  }
  const copy = isObject(document) ? copyObject(document) : {};
  return setOwn(copy, head, withValue(getOwn(copy, head), rest, value));
}

/** Every non-object value with its pointer; an empty object is a leaf of its own. */
export function pointerLeaves(document, base = "") {
  if (isObject(document) && Object.keys(document).length > 0) {
    return Object.entries(document).flatMap(([key, child]) => pointerLeaves(child, joinPointer(base, key)));
  }
  return [[base, document]];
}

/** The values a merge patch sets, by pointer (null = delete, {} = make it an object). */
export function patchLeaves(patch) {
  const leaves = {};
  if (isObject(patch) && Object.keys(patch).length === 0) return leaves;
  for (const [pointer, value] of pointerLeaves(patch)) setOwn(leaves, pointer, value);
  return leaves;
}

/** The merge patch that sets every `pointer -> value` of `leaves` (the inverse of patchLeaves). */
export function leavesToPatch(leaves) {
  const patch = {};
  for (const [pointer, value] of Object.entries(leaves)) {
    const tokens = splitPointer(pointer);
    if (tokens.length === 0) throw new LocalProtocolError("the root pointer is a replace, not a patch");
    let node = patch;
    for (const token of tokens.slice(0, -1)) {
      if (!hasOwn(node, token)) setOwn(node, token, {});
      node = node[token];
    }
    setOwn(node, tokens[tokens.length - 1], deepCopy(value));
  }
  return patch;
}

// --------------------------------------------------------------------------- stamps

function checkSender(sender, path) {
  if (typeof sender !== "string") throw new RemoteProtocolError(`${path}: _sender must be a string`, path);
  if (sender.length < 1 || sender.length > MAX_SENDER_LENGTH) {
    throw new RemoteProtocolError(`${path}: _sender must have 1..${MAX_SENDER_LENGTH} characters, got ${sender.length}`, path);
  }
  return sender;
}

function checkRev(rev, path) {
  if (!Number.isInteger(rev)) throw new RemoteProtocolError(`${path}: _rev must be an integer`, path);
  if (rev < 1 || rev > MAX_REV) throw new RemoteProtocolError(`${path}: _rev must be in 1..2**53, got ${rev}`, path);
  return rev;
}

/** `(_sender, _rev)` of one tune; `JSON.stringify` and `toJSON()` give the wire keys. */
export class Stamp {
  constructor(sender, rev) {
    checkSender(sender, "/" + SENDER_KEY);
    checkRev(rev, "/" + REV_KEY);
    this.sender = sender;
    this.rev = rev;
    Object.freeze(this);
  }

  toJSON() {
    return { [SENDER_KEY]: this.sender, [REV_KEY]: this.rev };
  }
}

/** A UUID v4: a new one for every connection. */
export function newNonce() {
  const cryptoApi = globalThis.crypto;
  if (typeof cryptoApi?.randomUUID === "function") return cryptoApi.randomUUID();
  // randomUUID exists only in secure contexts; getRandomValues everywhere.
  if (typeof cryptoApi?.getRandomValues !== "function") throw new LocalProtocolError("no crypto.getRandomValues to make a nonce");
  const bytes = cryptoApi.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A checked `{sender: rev}` map as the server sends it (`_acks`, `acks`, `retired_acks`). */
export function ackMap(acks, path) {
  if (!isObject(acks)) throw new RemoteProtocolError(`${path}: must be an object`, path);
  for (const [sender, rev] of Object.entries(acks)) {
    if (!Number.isInteger(rev)) {
      const revPath = joinPointer(path, sender);
      throw new RemoteProtocolError(`${revPath}: must be an integer`, revPath);
    }
  }
  return acks;
}

const ackOf = (acks, sender) => (acks && hasOwn(acks, sender) ? acks[sender] : 0);

// --------------------------------------------------------------------------- masking

function setMerging(document, pointer, value) {
  if (pointer === "") return deepCopy(value); // a replace (UpdateParams) pending at the root
  return mergePatch(document, leavesToPatch({ [pointer]: value }));
}

// The view channel: pointers may go through list indices (layout "layers").
function setByPointer(document, pointer, value) {
  if (value === null) {
    const tokens = splitPointer(pointer);
    if (tokens.length === 0) return null;
    const parentPointer = joinPointer("", ...tokens.slice(0, -1));
    const parent = resolvePointer(document, parentPointer, null);
    const last = tokens[tokens.length - 1];
    if (isObject(parent) && hasOwn(parent, last)) {
      const trimmed = copyObject(parent);
      delete trimmed[last];
      return withValue(document, parentPointer, trimmed);
    }
    return document;
  }
  return withValue(document, pointer, deepCopy(value));
}

// Pending entries: Map(pointer -> [[rev, value], ...] oldest first).
function entriesAfter(entries, ack) {
  const kept = new Map();
  for (const [pointer, values] of entries) {
    const above = values.filter(([rev]) => rev > ack);
    if (above.length > 0) kept.set(pointer, above);
  }
  return kept;
}

/**
 * Client masking for one node and one channel (rules C1-C4).
 *
 * `pending` maps a JSON pointer to every value in flight there, `[[rev, value], ...]` in rev
 * order. The pointer "" is a replace of the whole document; a newer entry of another pointer
 * lays over it. `retired` holds `[sender, entries]` of earlier nonces, oldest first, until a
 * resync decides them (C4).
 */
export class NodeMask {
  constructor(channel = PARAMS_CHANNEL, serverState = null) {
    if (!CHANNELS.includes(channel)) throw new LocalProtocolError(`unknown channel ${JSON.stringify(channel)}`);
    this.channel = channel;
    this.serverState = serverState ?? {};
    this.pending = new Map();
    this.retired = [];
  }

  /** Local values sent (or about to be sent) in the message with `rev`, above every rev pending. */
  edit(leaves, rev) {
    if (!Number.isInteger(rev) || rev < 1) throw new LocalProtocolError(`rev must be a positive integer, got ${rev}`);
    const items = Object.entries(leaves);
    for (const [pointer] of items) {
      splitPointer(pointer); // a bad pointer is our own bug: fail here, not in shown()
      const entries = this.pending.get(pointer);
      if (entries && entries[entries.length - 1][0] >= rev) {
        throw new LocalProtocolError(`rev ${rev} at ${JSON.stringify(pointer)} is not above its pending rev ${entries[entries.length - 1][0]}`);
      }
    }
    for (const [pointer, value] of items) {
      if (!this.pending.has(pointer)) this.pending.set(pointer, []);
      const entries = this.pending.get(pointer);
      entries.push([rev, value]);
      if (entries.length > MAX_PENDING_PER_POINTER) entries.shift(); // a newer entry still masks what it set
    }
  }

  /** An event (or a resync) brought the server's state (C1, C2; C4 with `retiredAcks`). */
  onServerState(state, acks, mySender, retiredAcks = null) {
    this.pending = entriesAfter(this.pending, ackOf(acks, mySender));
    this.retired = this.retired
      .map(([sender, entries]) => [sender, entriesAfter(entries, Math.max(ackOf(acks, sender), ackOf(retiredAcks, sender)))])
      .filter(([, entries]) => entries.size > 0);
    this.serverState = stripPrivate(state);
  }

  /** The server refused the message with `rev`: its entries go, uncovering older pending ones. */
  onRefused(rev) {
    for (const [pointer, entries] of [...this.pending]) {
      const kept = entries.filter(([entryRev]) => entryRev !== rev);
      if (kept.length > 0) this.pending.set(pointer, kept);
      else this.pending.delete(pointer);
    }
  }

  /** The server state with the newest entry of each pointer laid over it, retired nonces first (C3). */
  shown() {
    let document = this.serverState;
    const set = this.channel === PARAMS_CHANNEL ? setMerging : setByPointer;
    for (const entries of [...this.retired.map(([, retired]) => retired), this.pending]) {
      const newest = [...entries].map(([pointer, values]) => [values[values.length - 1][0], pointer, values[values.length - 1][1]]);
      newest.sort((a, b) => a[0] - b[0]); // stable: one message's pointers keep their order
      for (const [, pointer, value] of newest) document = set(document, pointer, value);
    }
    return document;
  }

  /** A reconnect: the pending entries of `oldSender` wait, still shown, for the resync (C4). */
  retirePending(oldSender) {
    if (this.pending.size > 0) {
      // A later nonce's entries of a pointer supersede an older nonce's (a replace, all of them):
      // re-sending an older one, undecided, could overwrite the later one, processed.
      const newer = this.pending;
      this.retired = newer.has("")
        ? []
        : this.retired
            .map(([sender, entries]) => [sender, new Map([...entries].filter(([pointer]) => !newer.has(pointer)))])
            .filter(([, entries]) => entries.size > 0);
      this.retired.push([oldSender, newer]);
    }
    this.pending = new Map();
  }

  /**
   * Empty `retired`; what to send again after a reconnect's resync, one `{pointer: value}` per
   * message: every remaining entry, in the message that first carried it, messages oldest first.
   */
  takePendingForResend() {
    const messages = new Map();
    this.retired.forEach(([, entries], generation) => {
      for (const [pointer, values] of entries) {
        for (const [rev, value] of values) {
          const key = `${generation}:${rev}`;
          if (!messages.has(key)) messages.set(key, { generation, rev, values: {} });
          setOwn(messages.get(key).values, pointer, value);
        }
      }
    });
    this.retired = [];
    return [...messages.values()]
      .sort((a, b) => a.generation - b.generation || a.rev - b.rev)
      .map((message) => message.values);
  }
}

// --------------------------------------------------------------------------- a client's whole state

/**
 * Everything a client keeps for section 5: its nonce, a rev counter per node, and a mask per node
 * and channel. View prediction: a params patch that sets a layer's rect x/y/width/height is also
 * shown in the view channel at `/layers/<index>/<field>`, only when the shown params say that
 * layer's `aspect_fit` is false and the last layout lists the layer.
 */
export class ClientCausalState {
  constructor(nonce = newNonce()) {
    checkSender(nonce, "/" + SENDER_KEY);
    this._nonce = nonce;
    this._revs = new Map();
    this._masks = new Map(); // node id -> Map(channel -> NodeMask)
  }

  get nonce() {
    return this._nonce;
  }

  lastRev(nodeId) {
    return this._revs.get(nodeId) ?? 0;
  }

  /** The stamp of the next message to `nodeId`. */
  stampFor(nodeId) {
    const rev = this.lastRev(nodeId) + 1;
    this._revs.set(nodeId, rev);
    return new Stamp(this._nonce, rev);
  }

  mask(nodeId, channel = PARAMS_CHANNEL) {
    if (!this._masks.has(nodeId)) this._masks.set(nodeId, new Map());
    const masks = this._masks.get(nodeId);
    if (!masks.has(channel)) masks.set(channel, new NodeMask(channel));
    return masks.get(channel);
  }

  hasMask(nodeId, channel = PARAMS_CHANNEL) {
    return this._masks.get(nodeId)?.has(channel) ?? false;
  }

  /** Every node with a mask or a rev counter, sorted. */
  nodeIds() {
    return [...new Set([...this._masks.keys(), ...this._revs.keys()])].sort();
  }

  shown(nodeId, channel = PARAMS_CHANNEL) {
    return this.mask(nodeId, channel).shown();
  }

  /** Stamp a PatchParams and mask its values; returns the stamp to send. */
  editPatch(nodeId, patch) {
    const stamp = this.stampFor(nodeId);
    const leaves = patchLeaves(patch);
    this._predictView(nodeId, leaves, stamp.rev);
    this.mask(nodeId, PARAMS_CHANNEL).edit(leaves, stamp.rev);
    return stamp;
  }

  /** Stamp an UpdateParams and mask the whole document; returns the stamp to send. */
  editReplace(nodeId, params) {
    const stamp = this.stampFor(nodeId);
    this.mask(nodeId, PARAMS_CHANNEL).edit({ "": stripPrivate(params) }, stamp.rev);
    return stamp;
  }

  /**
   * An event's state (`params` or view `data`, with `_acks`) arrived; returns the shown state.
   * A resync passes the node's `retiredAcks` too (rule C4).
   */
  onEvent(nodeId, channel, data, { path = "", retiredAcks = null } = {}) {
    if (!isObject(data)) throw new RemoteProtocolError(`${path || "/"}: must be an object`, path);
    const acks = ackMap(hasOwn(data, ACKS_KEY) ? data[ACKS_KEY] : {}, joinPointer(path, ACKS_KEY));
    const mask = this.mask(nodeId, channel);
    mask.onServerState(data, acks, this._nonce, retiredAcks);
    return mask.shown();
  }

  /**
   * A `pipeline` response (a resync): every node's params and view data, laid in with their acks
   * (`acks`, `view_acks`) and `retired_acks`; nodes no longer there are forgotten. Checks every
   * node before changing anything.
   */
  onPipeline(nodes, { path = "/payload/nodes" } = {}) {
    if (!isObject(nodes)) throw new RemoteProtocolError(`${path}: must be an object`, path);
    for (const [nodeId, node] of Object.entries(nodes)) {
      const base = joinPointer(path, nodeId);
      if (!isObject(node)) throw new RemoteProtocolError(`${base}: must be an object`, base);
      if (!isObject(node.params)) throw new RemoteProtocolError(`${joinPointer(base, "params")}: must be an object`, joinPointer(base, "params"));
      for (const key of ["view_data", "acks", "view_acks"]) {
        if (node[key] != null && !isObject(node[key])) {
          throw new RemoteProtocolError(`${joinPointer(base, key)}: must be an object`, joinPointer(base, key));
        }
      }
      if (node.retired_acks != null) ackMap(node.retired_acks, joinPointer(base, "retired_acks"));
    }
    for (const [nodeId, node] of Object.entries(nodes)) {
      const base = joinPointer(path, nodeId);
      const params = node.acks != null ? setOwn(copyObject(node.params), ACKS_KEY, node.acks) : node.params;
      this.onEvent(nodeId, PARAMS_CHANNEL, params, { path: joinPointer(base, "params"), retiredAcks: node.retired_acks ?? null });
      if (node.view_data != null) {
        const view = node.view_acks != null ? setOwn(copyObject(node.view_data), ACKS_KEY, node.view_acks) : node.view_data;
        this.onEvent(nodeId, VIEW_CHANNEL, view, { path: joinPointer(base, "view_data") });
      }
    }
    for (const nodeId of this.nodeIds()) {
      if (!hasOwn(nodes, nodeId)) this.forgetNode(nodeId);
    }
  }

  /** An `error` named our `rev` for `nodeId`: drop its pending values in every channel. */
  onRefused(nodeId, rev) {
    for (const mask of this._masks.get(nodeId)?.values() ?? []) mask.onRefused(rev);
  }

  forgetNode(nodeId) {
    this._masks.delete(nodeId);
    this._revs.delete(nodeId);
  }

  /**
   * Switch to a new nonce with counters at 0; pending values stay masked under the old nonce (C4).
   * Then resync (getpipeline to onPipeline), then takeResendMessages(), then new edits.
   */
  reconnected(nonce = newNonce()) {
    checkSender(nonce, "/" + SENDER_KEY);
    if (nonce === this._nonce) throw new LocalProtocolError("a reconnect needs a nonce that was not used before");
    const oldNonce = this._nonce;
    this._nonce = nonce;
    this._revs.clear();
    for (const masks of this._masks.values()) {
      for (const mask of masks.values()) mask.retirePending(oldNonce);
    }
  }

  /**
   * After the resync: the params values still undecided, `{nodeId: [{pointer: value}, ...]}`, one
   * object per message, oldest first; the pointer "" is a replace. Retired view predictions go:
   * re-sending the params predicts them again.
   */
  takeResend() {
    const resend = {};
    for (const [nodeId, masks] of this._masks) {
      for (const [channel, mask] of masks) {
        const groups = mask.takePendingForResend();
        if (channel === PARAMS_CHANNEL && groups.length > 0) setOwn(resend, nodeId, groups);
      }
    }
    return resend;
  }

  /**
   * takeResend(), stamped and masked under the current nonce: `[{nodeId, body, replace, stamp}]`
   * to send in this order (a message with a replace and patches goes as the replace, then a patch).
   */
  takeResendMessages() {
    const messages = [];
    for (const [nodeId, groups] of Object.entries(this.takeResend())) {
      for (const values of groups) {
        const patchValues = copyObject(values);
        if (hasOwn(values, "")) {
          delete patchValues[""];
          messages.push({ nodeId, body: values[""], replace: true, stamp: this.editReplace(nodeId, values[""]) });
        }
        if (Object.keys(patchValues).length > 0) {
          const patch = leavesToPatch(patchValues);
          messages.push({ nodeId, body: patch, replace: false, stamp: this.editPatch(nodeId, patch) });
        }
      }
    }
    return messages;
  }

  _predictView(nodeId, leaves, rev) {
    if (!this.hasMask(nodeId, VIEW_CHANNEL)) return;
    const layout = this.mask(nodeId, VIEW_CHANNEL).serverState;
    const layers = isObject(layout) ? getOwn(layout, "layers") : undefined;
    if (!Array.isArray(layers)) return;
    const indexOf = new Map();
    layers.forEach((layer, index) => {
      if (isObject(layer)) indexOf.set(getOwn(layer, "id"), index);
    });
    const shownParams = this.mask(nodeId, PARAMS_CHANNEL).shown();
    const predicted = {};
    for (const [pointer, value] of Object.entries(leaves)) {
      const tokens = splitPointer(pointer);
      if (tokens.length !== 4 || tokens[0] !== "layers" || tokens[2] !== "rect") continue;
      const [, pin, , field] = tokens;
      if (!RECT_FIELDS.has(field) || !indexOf.has(pin) || typeof value !== "number") continue;
      const aspectPointer = joinPointer("/layers", pin, "aspect_fit");
      const aspectFit = hasOwn(leaves, aspectPointer) ? leaves[aspectPointer] : resolvePointer(shownParams, aspectPointer, null);
      if (aspectFit !== false) continue;
      setOwn(predicted, joinPointer("/layers", indexOf.get(pin), field), value);
    }
    if (Object.keys(predicted).length > 0) this.mask(nodeId, VIEW_CHANNEL).edit(predicted, rev);
  }
}

// --------------------------------------------------------------------------- wire messages

/** The `message` of a tune: `{"PatchParams": {...patch, _sender, _rev}}` (`UpdateParams` with `replace`). */
export function tuneMessage(body, stamp, { replace = false, transition = null } = {}) {
  const message = { ...stripPrivate(body), ...stamp.toJSON() };
  if (transition) message._transition = transition; // this change's transition, this once (PROTOCOL.md section 3)
  return { [replace ? "UpdateParams" : "PatchParams"]: message };
}

/** A `tunenodeasync` request envelope (a `correlation_id` makes a refusal come back as an `error`). */
export function tuneRequest(sessionId, nodeId, body, stamp, { replace = false, correlationId = undefined, sync = false, transition = null } = {}) {
  const request = {
    type: "request",
    payload: { action: sync ? "tunenode" : "tunenodeasync", session_id: sessionId, node_id: nodeId, message: tuneMessage(body, stamp, { replace, transition }) },
  };
  if (correlationId !== undefined) request.correlation_id = correlationId;
  return request;
}
