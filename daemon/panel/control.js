// The panel's control connection: one WebSocket to /api/v1/control, requests answered by correlation id,
// events fanned out to the page, and every edit through causal.js (docs/PROTOCOL.md section 5).
//
// Edits: `edit(session, node, patch)` stamps a PatchParams (ClientCausalState.editPatch), so what the page
// shows (`shown`) has the value at once, masked until the server acknowledges it, and sends it as a
// `tunenodeasync` with a correlation id, so a refusal comes back as an `error` that uncovers the value before.
//
// Reconnect (rule C4): when the socket drops, edits go on being stamped and masked under the old nonce (and
// are not sent). When a new socket opens, every session's state switches to a new nonce, each watched session
// is resynced with getpipeline (its acks and retired acks decide which pending values the server processed),
// the rest is re-sent in its first order, and only then do new edits go out; an edit made during that resync
// waits in `held`, shown over the state, and is stamped after the re-sends. The delay between tries doubles
// from 50 ms up to 5 s, with jitter, and starts again at 50 ms after a successful resync.
//
// The bearer token travels as a subprotocol (PROTOCOL.md section 1): a browser cannot set headers on a
// WebSocket, and a token in the URL would end up in logs.

import { ClientCausalState, PARAMS_CHANNEL, VIEW_CHANNEL, isObject, mergePatch, newNonce, tuneRequest } from "./causal.js";

export const SUBPROTOCOL = "compositord.v1";
export const TOKEN_SUBPROTOCOL_PREFIX = "compositord.token.";
export const CONTROL_PATH = "/api/v1/control";
const REQUEST_TIMEOUT_MS = 10_000;
const BACKOFF_MIN_MS = 50;
const BACKOFF_MAX_MS = 5_000;
// Tunes whose refusal may still come back: correlation id -> session id (the error names node and rev only).
const MAX_TUNES_IN_FLIGHT = 4096;

/** The subprotocol that carries `token`: base64url of its UTF-8 bytes, without padding. */
export function tokenSubprotocol(token) {
  const bytes = new TextEncoder().encode(token);
  let binary = "";
  for (const byte of bytes) binary += String.fromCharCode(byte);
  return TOKEN_SUBPROTOCOL_PREFIX + btoa(binary).replaceAll("+", "-").replaceAll("/", "_").replace(/=+$/, "");
}

/** The params pointer of a refused tune's path ("/payload/message/PatchParams/layers/in_1/opacity" -> "/layers/in_1/opacity"). */
export function paramsPointerOf(path) {
  const match = /^\/payload(?:\/operations\/\d+)?\/message\/(?:PatchParams|UpdateParams)(\/.*)?$/.exec(path ?? "");
  return match ? (match[1] ?? "") : null;
}

export class ControlConnection extends EventTarget {
  constructor({ url, token = null, WebSocketClass = globalThis.WebSocket } = {}) {
    super();
    this.url = url;
    this.token = token;
    this.WebSocketClass = WebSocketClass;
    this.nonce = newNonce();
    this.status = "connecting";
    this.sessions = new Map(); // session id -> ClientCausalState
    this.watched = new Set(); // sessions resynced on every reconnect
    this.held = []; // edits made while resyncing: {sessionId, nodeId, patch}
    this._ws = null;
    this._everOpened = false;
    this._requests = new Map(); // correlation id -> {resolve, reject, timer}
    this._tunes = new Map(); // correlation id -> session id
    this._counter = 0;
    this._backoff = BACKOFF_MIN_MS;
    this._retryTimer = null;
    this._closedByUs = false;
  }

  // ------------------------------------------------------------------ lifecycle

  start() {
    this._closedByUs = false;
    this._open();
  }

  close() {
    this._closedByUs = true;
    clearTimeout(this._retryTimer);
    this._ws?.close(1000, "panel closed");
  }

  /** Close the socket as a network failure would (tests, and a manual "reconnect"). */
  drop() {
    this._ws?.close(4000, "dropped by the panel");
  }

  _setStatus(status, detail = {}) {
    this.status = status;
    this.dispatchEvent(new CustomEvent("status", { detail: { status, ...detail } }));
  }

  _open() {
    this._setStatus(this._everOpened ? "reconnecting" : "connecting");
    const protocols = [SUBPROTOCOL];
    if (this.token) protocols.push(tokenSubprotocol(this.token));
    let ws;
    try {
      ws = new this.WebSocketClass(this.url, protocols);
    } catch (error) {
      this._scheduleRetry(String(error));
      return;
    }
    this._ws = ws;
    ws.onopen = () => this._onOpen(ws);
    ws.onmessage = (message) => {
      if (ws === this._ws && typeof message.data === "string") this._onText(message.data);
    };
    ws.onclose = (close) => this._onClose(ws, close);
  }

  async _onOpen(ws) {
    if (this._everOpened) {
      // Rule C4: pending values stay shown under the old nonce until the resync decides them.
      this.nonce = newNonce();
      for (const state of this.sessions.values()) state.reconnected(this.nonce);
    }
    this._everOpened = true;
    this._setStatus("resyncing");
    try {
      for (const sessionId of [...this.watched]) await this._resync(sessionId);
      for (const [sessionId, state] of this.sessions) {
        for (const message of state.takeResendMessages()) this._send(sessionId, message.nodeId, message.body, message.stamp, message.replace);
      }
    } catch (error) {
      if (ws === this._ws) ws.close(4001, "resync failed");
      return;
    }
    if (ws !== this._ws) return;
    const held = this.held;
    this.held = [];
    this._setStatus("open");
    for (const { sessionId, nodeId, patch } of held) this.edit(sessionId, nodeId, patch);
    this._backoff = BACKOFF_MIN_MS;
  }

  _onClose(ws, close) {
    if (ws !== this._ws) return;
    this._ws = null;
    for (const [, pending] of this._requests) {
      clearTimeout(pending.timer);
      pending.reject(new Error("the connection closed"));
    }
    this._requests.clear();
    this._tunes.clear();
    if (this._closedByUs) {
      this._setStatus("closed");
      return;
    }
    this._scheduleRetry(`closed (${close.code}${close.reason ? ": " + close.reason : ""})`);
  }

  _scheduleRetry(reason) {
    const delay = Math.min(BACKOFF_MAX_MS, this._backoff) * (0.5 + Math.random() / 2);
    this._backoff = Math.min(BACKOFF_MAX_MS, this._backoff * 2);
    this._setStatus("offline", { reason, retryInMs: Math.round(delay) });
    clearTimeout(this._retryTimer);
    this._retryTimer = setTimeout(() => this._open(), delay);
  }

  // ------------------------------------------------------------------ requests

  /**
   * Send a request; resolves with the reply's payload, rejects on `error` (with `.payload`) or a lost connection.
   * `stampedFor`: the session of a stamped request, whose refusal uncovers its masked values (rule S6).
   */
  request(action, payload = {}, { stampedFor = null } = {}) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1) return Promise.reject(new Error("not connected"));
    const correlationId = `r${++this._counter}`;
    if (stampedFor !== null) this._rememberTune(correlationId, stampedFor);
    ws.send(JSON.stringify({ type: "request", correlation_id: correlationId, payload: { action, ...payload } }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._requests.delete(correlationId);
        reject(new Error(`${action}: no answer within ${REQUEST_TIMEOUT_MS / 1000} s`));
      }, REQUEST_TIMEOUT_MS);
      this._requests.set(correlationId, { resolve, reject, timer, action });
    });
  }

  // ------------------------------------------------------------------ sessions and causal state

  state(sessionId) {
    let state = this.sessions.get(sessionId);
    if (!state) {
      state = new ClientCausalState(this.nonce);
      this.sessions.set(sessionId, state);
    }
    return state;
  }

  /** Watch a session: getpipeline now (laid into its causal state) and after every reconnect. */
  async watch(sessionId) {
    this.watched.add(sessionId);
    return this._resync(sessionId);
  }

  unwatch(sessionId) {
    this.watched.delete(sessionId);
  }

  async _resync(sessionId) {
    let pipeline;
    try {
      pipeline = await this.request("getpipeline", { session_id: sessionId });
    } catch (error) {
      if (error.payload?.code === "not_found") {
        this.watched.delete(sessionId);
        this.sessions.delete(sessionId);
        this.dispatchEvent(new CustomEvent("sessiongone", { detail: { sessionId } }));
        return null;
      }
      throw error;
    }
    this.state(sessionId).onPipeline(pipeline.nodes);
    this.dispatchEvent(new CustomEvent("resynced", { detail: { sessionId, pipeline } }));
    return pipeline;
  }

  /** What to draw for a node: the server's state with pending (and held) edits laid over it. */
  shown(sessionId, nodeId, channel = PARAMS_CHANNEL) {
    let shown = this.state(sessionId).shown(nodeId, channel);
    if (channel === PARAMS_CHANNEL) {
      for (const held of this.held) if (held.sessionId === sessionId && held.nodeId === nodeId) shown = mergePatch(shown, held.patch);
    }
    return shown;
  }

  /** A PatchParams edit: shown at once, sent now (or, while resyncing, right after it). */
  edit(sessionId, nodeId, patch) {
    if (this.status === "resyncing") {
      this.held.push({ sessionId, nodeId, patch });
    } else {
      const stamp = this.state(sessionId).editPatch(nodeId, patch);
      if (this.status === "open") this._send(sessionId, nodeId, patch, stamp, false);
      // Offline: stamped and masked, not sent; the reconnect's resync re-sends it (rule C4).
    }
    this._changed(sessionId, nodeId);
  }

  /**
   * A change of a compositor's program scene (in `patch`) shown with `transition` (a patch of the params'
   * `transition`) this once, the params keeping theirs (`_transition`, PROTOCOL.md section 3). Sent only
   * while open, as a take is: a re-send after a reconnect would carry the patch without the transition.
   */
  editWithTransition(sessionId, nodeId, patch, transition) {
    if (this.status !== "open") throw new Error("not connected: the change is not sent");
    this._send(sessionId, nodeId, patch, this.state(sessionId).editPatch(nodeId, patch), false, transition);
    this._changed(sessionId, nodeId);
  }

  /**
   * A `take` (PROTOCOL.md section 3): the preview scene to program, the program scene to preview. What it
   * will do (`predicted`, a merge patch: the scenes exchanged, the T-bar cleared) is shown at once, masked
   * under the take's stamp until acknowledged; null predicts nothing. Sent only while open (a take is a
   * decision of the moment); a prediction still undecided at a reconnect is resolved by rule C4 like any
   * edit (re-sent as the patch it predicts when the server did not process it). Resolves once stored.
   */
  take(sessionId, nodeId, predicted, transition = null) {
    if (this.status !== "open") return Promise.reject(new Error("not connected: take is not sent"));
    const state = this.state(sessionId);
    const stamp = predicted ? state.editPatch(nodeId, predicted) : state.stampFor(nodeId);
    this._changed(sessionId, nodeId);
    const payload = { session_id: sessionId, node_id: nodeId, ...stamp.toJSON() };
    if (transition) payload.transition = transition;
    return this.request("take", payload, { stampedFor: sessionId });
  }

  _rememberTune(correlationId, sessionId) {
    this._tunes.set(correlationId, sessionId);
    if (this._tunes.size > MAX_TUNES_IN_FLIGHT) this._tunes.delete(this._tunes.keys().next().value);
  }

  _send(sessionId, nodeId, body, stamp, replace, transition = null) {
    const correlationId = `t${++this._counter}`;
    this._rememberTune(correlationId, sessionId);
    this._ws?.send(JSON.stringify(tuneRequest(sessionId, nodeId, body, stamp, { replace, correlationId, transition })));
  }

  _changed(sessionId, nodeId) {
    this.dispatchEvent(new CustomEvent("shown", { detail: { sessionId, nodeId } }));
  }

  // ------------------------------------------------------------------ incoming

  _onText(text) {
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      return;
    }
    const payload = message.payload ?? {};
    if (message.type === "response") this._onResponse(message.correlation_id, payload);
    else if (message.type === "event") this._onEvent(payload);
  }

  _onResponse(correlationId, payload) {
    const pending = this._requests.get(correlationId);
    const tuneSession = this._tunes.get(correlationId);
    this._tunes.delete(correlationId);
    if (payload.action === "error" && typeof payload._rev === "number" && payload._sender === this.nonce && payload.node_id) {
      const sessionId = tuneSession ?? payload.session_id;
      if (sessionId && this.sessions.has(sessionId)) {
        this.state(sessionId).onRefused(payload.node_id, payload._rev);
        this._changed(sessionId, payload.node_id);
      }
      const detail = { sessionId, nodeId: payload.node_id, pointer: paramsPointerOf(payload.path), ...payload };
      this.dispatchEvent(new CustomEvent("refused", { detail }));
    } else if (payload.action === "error" && !pending) {
      this.dispatchEvent(new CustomEvent("servererror", { detail: payload }));
    }
    if (!pending) return;
    this._requests.delete(correlationId);
    clearTimeout(pending.timer);
    if (payload.action === "error") {
      const error = new Error(payload.message ?? `${pending.action} refused`);
      error.payload = payload;
      pending.reject(error);
    } else {
      pending.resolve(payload);
    }
  }

  _onEvent(payload) {
    const sessionId = payload.session_id;
    const watched = typeof sessionId === "string" && this.watched.has(sessionId);
    if (watched && payload.event === "nodeparamschanged" && isObject(payload.params)) {
      this.state(sessionId).onEvent(payload.node_id, PARAMS_CHANNEL, payload.params);
      this._changed(sessionId, payload.node_id);
    } else if (watched && payload.event === "nodeviewdataupdated" && isObject(payload.data)) {
      this.state(sessionId).onEvent(payload.node_id, VIEW_CHANNEL, payload.data);
      this._changed(sessionId, payload.node_id);
    } else if (watched && payload.event === "noderemoved") {
      this.state(sessionId).forgetNode(payload.node_id);
    } else if (payload.event === "sessiondestroyed" && typeof sessionId === "string") {
      this.watched.delete(sessionId);
      this.sessions.delete(sessionId);
    }
    this.dispatchEvent(new CustomEvent("event", { detail: payload }));
  }
}
