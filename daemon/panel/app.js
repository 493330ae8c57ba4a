// The web panel: sessions, the pipeline graph, the compositor view, its scene controls and the inspector, over one control
// connection (control.js). Served by the daemon at "/", same origin as the WebSocket.
//
// The bearer token, when the daemon has one, is asked for once and kept in sessionStorage (this tab only);
// it is sent in the Authorization header of the one HTTP check below and as a WebSocket subprotocol, never
// in a URL. The shown session is in the page's fragment (#session=ID), which browsers never send.

import { CompositorView, scopedPatch } from "./compositor.js";
import { CONTROL_PATH, ControlConnection } from "./control.js";
import { h, clear } from "./dom.js";
import { PipelineGraph } from "./graph.js";
import { Inspector } from "./inspector.js";
import { SceneControls } from "./scenes.js";

const TOKEN_KEY = "compositord.token";
const AUTH_PATH = "/api/v1/auth";

const $ = (selector) => document.querySelector(selector);

/** Ask the daemon whether the token (or none) is enough; asks the person for one until it is. */
async function obtainToken() {
  let token = sessionStorage.getItem(TOKEN_KEY);
  for (;;) {
    const response = await fetch(AUTH_PATH, { headers: token ? { Authorization: `Bearer ${token}` } : {}, cache: "no-store" });
    if (response.ok) return token;
    if (response.status !== 401) throw new Error(`${AUTH_PATH}: HTTP ${response.status}`);
    sessionStorage.removeItem(TOKEN_KEY);
    token = await askForToken(token ? "that token was refused" : "");
    sessionStorage.setItem(TOKEN_KEY, token);
  }
}

function askForToken(problem) {
  const dialog = $("#token-dialog");
  $("#token-error").textContent = problem;
  $("#token-input").value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve($("#token-input").value), { once: true });
    dialog.showModal();
  });
}

function sessionFromFragment() {
  const match = /(?:^|&)session=([^&]+)/.exec(location.hash.slice(1));
  return match ? decodeURIComponent(match[1]) : null;
}

const STATUS_TEXT = {
  connecting: "connecting…",
  open: "connected",
  resyncing: "resyncing…",
  reconnecting: "reconnecting…",
  offline: "offline",
  closed: "closed",
};

class Panel {
  constructor(connection) {
    this.connection = connection;
    this.schema = null;
    this.examples = [];
    this.sessions = [];
    this.sessionId = null;
    this.sessionName = "";
  }

  async start() {
    const status = $("#connection");
    this.connection.addEventListener("status", (event) => {
      const { status: state, retryInMs, reason } = event.detail;
      status.dataset.status = state;
      status.textContent = state === "offline" ? `offline, retrying in ${(retryInMs / 1000).toFixed(1)} s` : STATUS_TEXT[state];
      status.title = reason ?? "";
      if (state === "open") this._onOpen();
    });
    this.connection.start();
  }

  async _onOpen() {
    if (!this.schema) await this._setUp();
    await this.refreshSessions();
  }

  async _setUp() {
    this.schema = (await this.connection.request("getschema")).kinds;
    this.view = new CompositorView({
      connection: this.connection,
      stage: $("#stage"),
      canvas: $("#preview"),
      boxes: $("#boxes"),
      empty: $("#stage-empty"),
      statsLabel: $("#preview-stats"),
      sceneLabel: $("#box-scene"),
    });
    this.scenes = new SceneControls({ connection: this.connection, root: $("#scenes") });
    this.inspector = new Inspector({ connection: this.connection, root: $("#inspector"), title: $("#inspector-title"), view: this.view, schema: this.schema });
    this.graph = new PipelineGraph({ connection: this.connection, root: $("#graph"), addForm: $("#add-node"), connectForm: $("#connect"), schema: this.schema });
    this.graph.addEventListener("selectnode", (event) => {
      const { nodeId, kind } = event.detail;
      this.inspector.showNode(this.sessionId, nodeId, kind, () => this.graph.removeNode(nodeId).catch((error) => this._sidebarError(error)));
      if (kind === "video::compositor") this._showCompositor(nodeId);
    });
    this.connection.addEventListener("event", (event) => this._onEvent(event.detail));
    this.connection.addEventListener("resynced", (event) => {
      if (event.detail.sessionId === this.sessionId) this._loadPipeline(event.detail.pipeline);
    });
    this.connection.addEventListener("sessiongone", (event) => {
      if (event.detail.sessionId === this.sessionId) this.selectSession(null);
    });
    this.examples = (await this.connection.request("listexamples")).examples;
    $("#new-session-source").append(...this.examples.map((example, index) => h("option", { value: String(index) }, `example: ${example.name}`)));
    $("#create-session").addEventListener("submit", (event) => this._create(event));
    $("#import-file").addEventListener("change", (event) => this._import(event));
    $("#export").addEventListener("click", () => this._export());
    $("#compositor-select").addEventListener("change", (event) => this._showCompositor(event.target.value));
    $("#add-text").addEventListener("click", () => this._addOverlay("text"));
    $("#add-image").addEventListener("click", () => this._addOverlay("image"));
    window.addEventListener("hashchange", () => {
      const wanted = sessionFromFragment();
      if (wanted && wanted !== this.sessionId) this.selectSession(wanted);
    });
    await this._loadAssets();
  }

  async _loadAssets() {
    try {
      this.inspector.assets = (await this.connection.request("listassets")).assets;
    } catch {
      this.inspector.assets = [];
    }
    $("#add-image").title = this.inspector.assets.length ? "" : "no images in the asset folder";
  }

  async refreshSessions() {
    this.sessions = (await this.connection.request("listsessions")).sessions;
    const list = clear($("#sessions"));
    for (const session of this.sessions) {
      list.append(
        h(
          "li",
          { class: session.session_id === this.sessionId ? "current" : "", "data-session": session.session_id },
          h("a", { href: `#session=${encodeURIComponent(session.session_id)}` }, session.name),
          h("span", { class: "muted" }, ` ${session.nodes} nodes`),
          h("button", { type: "button", class: "small danger", "aria-label": `delete ${session.name}`, onclick: () => this._destroy(session) }, "delete"),
        ),
      );
    }
    const wanted = sessionFromFragment();
    const known = (id) => this.sessions.some((session) => session.session_id === id);
    if (this.sessionId && known(this.sessionId)) return;
    this.selectSession(wanted && known(wanted) ? wanted : (this.sessions[0]?.session_id ?? null));
  }

  async selectSession(sessionId) {
    if (this.sessionId) this.connection.unwatch(this.sessionId);
    this.sessionId = sessionId;
    const session = this.sessions.find((s) => s.session_id === sessionId);
    this.sessionName = session?.name ?? "";
    $("#session-title").textContent = this.sessionName;
    for (const item of document.querySelectorAll("#sessions li")) item.classList.toggle("current", item.dataset.session === sessionId);
    $("#export").disabled = !sessionId;
    this.inspector.clear();
    if (!sessionId) {
      this.graph.unload();
      this.view.show(null, null);
      this._fillCompositors();
      return;
    }
    if (sessionFromFragment() !== sessionId) history.replaceState(null, "", `#session=${encodeURIComponent(sessionId)}`);
    const pipeline = await this.connection.watch(sessionId);
    if (pipeline && sessionId === this.sessionId) this._loadPipeline(pipeline);
  }

  _loadPipeline(pipeline) {
    this.graph.load(this.sessionId, pipeline);
    this._fillCompositors();
  }

  _fillCompositors() {
    const select = $("#compositor-select");
    const ids = this.graph.compositorIds();
    const keep = ids.includes(this.view.nodeId) ? this.view.nodeId : (ids[0] ?? null);
    select.replaceChildren(...ids.map((id) => h("option", { value: id }, id)));
    select.hidden = ids.length < 2;
    if (keep) select.value = keep;
    this._showCompositor(keep);
  }

  _showCompositor(nodeId) {
    this.view.show(nodeId ? this.sessionId : null, nodeId);
    this.scenes.show(nodeId ? this.sessionId : null, nodeId);
    $("#compositor-select").value = nodeId ?? "";
    $("#add-text").disabled = !nodeId;
    $("#add-image").disabled = !nodeId || this.inspector.assets.length === 0;
  }

  _onEvent(payload) {
    this.graph?.onEvent(payload);
    if (payload.event === "sessioncreated" || payload.event === "sessiondestroyed") {
      if (payload.event === "sessiondestroyed" && payload.session_id === this.sessionId) this.sessionId = null;
      this.refreshSessions().catch(() => {});
    } else if (payload.session_id === this.sessionId && (payload.event === "nodeadded" || payload.event === "noderemoved")) {
      this._fillCompositors();
      if (payload.event === "noderemoved" && this.inspector.target?.nodeId === payload.node_id) this.inspector.clear();
    }
  }

  _sidebarError(error) {
    $("#sidebar-error").textContent = error ? error.message : "";
  }

  async _create(event) {
    event.preventDefault();
    this._sidebarError(null);
    const name = $("#new-session-name").value.trim();
    const source = $("#new-session-source").value;
    const pipeline = source === "" ? { nodes: {}, connections: [] } : this.examples[Number(source)].pipeline;
    await this._createSession(name, pipeline);
    $("#new-session-name").value = "";
  }

  async _createSession(name, pipeline) {
    try {
      const created = await this.connection.request("createsession", { name, pipeline });
      location.hash = `session=${encodeURIComponent(created.session_id)}`;
      await this.refreshSessions();
      await this.selectSession(created.session_id);
    } catch (error) {
      this._sidebarError(error);
    }
  }

  async _import(event) {
    this._sidebarError(null);
    const file = event.target.files[0];
    event.target.value = "";
    if (!file) return;
    const format = /\.toml$/i.test(file.name) ? "toml" : "yaml"; // JSON is YAML
    try {
      const parsed = await this.connection.request("parsepipeline", { text: await file.text(), format });
      await this._createSession(file.name.replace(/\.[^.]*$/, ""), parsed.pipeline);
    } catch (error) {
      this._sidebarError(error);
    }
  }

  async _export() {
    this._sidebarError(null);
    try {
      const exported = await this.connection.request("exportpipeline", { session_id: this.sessionId, format: "yaml" });
      const link = h("a", { href: URL.createObjectURL(new Blob([exported.text], { type: "application/yaml" })), download: `${this.sessionName || "pipeline"}.yaml` });
      link.click();
      setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    } catch (error) {
      this._sidebarError(error);
    }
  }

  async _destroy(session) {
    this._sidebarError(null);
    try {
      await this.connection.request("destroysession", { session_id: session.session_id });
    } catch (error) {
      this._sidebarError(error);
    }
  }

  _addOverlay(kind) {
    const scene = this.view.scene();
    const listKey = kind === "text" ? "text_overlays" : "image_overlays";
    const list = [...(this.view.layout()?.[listKey] ?? [])];
    const taken = new Set(list.map((overlay) => overlay.id));
    let number = list.length + 1;
    while (taken.has(`${kind}-${number}`)) number += 1;
    const id = `${kind}-${number}`;
    const overlay =
      kind === "text"
        ? { id, text: "Text", font_size: 48, rect: { x: 40, y: 40 } }
        : { id, asset_path: this.inspector.assets[0], rect: { x: 40, y: 40 } };
    this.connection.edit(this.view.sessionId, this.view.nodeId, scopedPatch(scene, { [listKey]: [...list, overlay] }));
    requestAnimationFrame(() => this.view.select(`${kind}:${id}`));
  }
}

async function main() {
  const token = await obtainToken();
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const connection = new ControlConnection({ url: `${scheme}//${location.host}${CONTROL_PATH}`, token });
  const panel = new Panel(connection);
  // For people at the console, the end-to-end tests and the preview benchmark.
  window.compositordPanel = {
    connection,
    panel,
    previewStats: () => panel.view?.previewStats() ?? null,
    resetPreviewStats: () => panel.view?.resetPreviewStats(),
  };
  await panel.start();
}

main().catch((error) => {
  $("#connection").dataset.status = "offline";
  $("#connection").textContent = `cannot start: ${error.message}`;
});
