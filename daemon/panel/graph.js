// The pipeline as a graph: a column of sources, one of compositors, one of sinks; each node a card with its
// kind, state (ok, or the error the engine reported) and live stats (fps, render ms p99, dropped frames);
// connections drawn between the cards and listed with a button to disconnect each. Below it, the forms to
// add a node of any kind (its params form made from the schema) and to connect an output to a free input.

import { h, svg, clear } from "./dom.js";
import { clearFieldErrors, kindForm, showFieldError } from "./forms.js";

const ROLE_ORDER = ["source", "compositor", "sink"];

/** Stats in a few words: what a person watching a pipeline wants to see first. */
export function statsLine(stats) {
  if (!stats) return "";
  const parts = [];
  if (typeof stats.fps === "number") parts.push(`${stats.fps} fps`);
  if (typeof stats.render_ms_p99 === "number") parts.push(`render p99 ${stats.render_ms_p99.toFixed(1)} ms`);
  if (typeof stats.frames_dropped === "number") parts.push(`dropped ${stats.frames_dropped}`);
  if (typeof stats.frames_written === "number") parts.push(`written ${stats.frames_written}`);
  return parts.join(" · ");
}

/** Input pins of a node: the compositor's in_0..in_{n-1}, a sink's `in`, none for a source. */
export function inputPins(kindSchema, params) {
  if (!kindSchema) return [];
  if (kindSchema.input_pins === "num_inputs") {
    const count = params?.num_inputs ?? kindSchema.fields.num_inputs?.default ?? 0;
    return Array.from({ length: count }, (_, slot) => `in_${slot}`);
  }
  return kindSchema.input_pins;
}

export class PipelineGraph extends EventTarget {
  constructor({ connection, root, addForm, connectForm, schema }) {
    super();
    this.connection = connection;
    this.root = root;
    this.schema = schema;
    this.sessionId = null;
    this.nodes = {}; // id -> {kind, state, stats}
    this.connections = [];
    this.selectedNode = null;
    this._addForm = addForm;
    this._connectForm = connectForm;
    this._addParams = null;
    this._pending = false;
    this._setUpAddForm();
    this._setUpConnectForm();
    new ResizeObserver(() => this._drawEdges()).observe(root);
  }

  /** A `pipeline` response: the whole graph. */
  load(sessionId, pipeline) {
    this.sessionId = sessionId;
    this.nodes = {};
    for (const [nodeId, node] of Object.entries(pipeline.nodes)) {
      this.nodes[nodeId] = { kind: node.kind, state: node.state, stats: this.nodes[nodeId]?.stats ?? null };
    }
    this.connections = pipeline.connections.map((c) => ({ ...c }));
    this.render();
  }

  unload() {
    this.sessionId = null;
    this.nodes = {};
    this.connections = [];
    this.render();
  }

  /** Apply an event of the shown session; structure changes redraw, stats and states update in place. */
  onEvent(payload) {
    if (payload.session_id !== this.sessionId) return;
    switch (payload.event) {
      case "nodeadded":
        this.nodes[payload.node_id] = { kind: payload.kind, state: "ok", stats: null };
        this.render();
        break;
      case "noderemoved":
        delete this.nodes[payload.node_id];
        this.connections = this.connections.filter((c) => c.from_node !== payload.node_id && c.to_node !== payload.node_id);
        this.render();
        break;
      case "connectionadded":
        this.connections.push({ from_node: payload.from_node, from_pin: payload.from_pin, to_node: payload.to_node, to_pin: payload.to_pin });
        this.render();
        break;
      case "connectionremoved":
        this.connections = this.connections.filter(
          (c) => !(c.from_node === payload.from_node && c.from_pin === payload.from_pin && c.to_node === payload.to_node && c.to_pin === payload.to_pin),
        );
        this.render();
        break;
      case "nodestatsupdated":
        if (this.nodes[payload.node_id]) {
          this.nodes[payload.node_id].stats = payload.stats;
          this._updateCard(payload.node_id);
        }
        break;
      case "nodestatechanged":
        if (this.nodes[payload.node_id]) {
          this.nodes[payload.node_id].state = payload.state;
          this._updateCard(payload.node_id);
        }
        break;
      case "nodeparamschanged":
        // num_inputs may have changed: the free input pins follow.
        if (this.nodes[payload.node_id]?.kind === "video::compositor") this._fillConnectChoices();
        break;
      default:
        break;
    }
  }

  compositorIds() {
    return Object.entries(this.nodes)
      .filter(([, node]) => node.kind === "video::compositor")
      .map(([nodeId]) => nodeId)
      .sort();
  }

  render() {
    clear(this.root);
    const columns = ROLE_ORDER.map((role) => h("div", { class: `column column-${role}` }));
    for (const nodeId of Object.keys(this.nodes).sort()) {
      const node = this.nodes[nodeId];
      const role = this.schema?.[node.kind]?.role ?? "source";
      const card = h(
        "button",
        { type: "button", class: "node", "data-node": nodeId, onclick: () => this._select(nodeId) },
        h("span", { class: "node-id" }, nodeId),
        h("span", { class: "node-kind" }, node.kind),
        h("span", { class: "node-state" }),
        h("span", { class: "node-stats" }),
      );
      columns[Math.max(0, ROLE_ORDER.indexOf(role))].append(card);
    }
    this._edges = svg("svg", { class: "edges", "aria-hidden": "true" });
    this.root.append(this._edges, ...columns);
    if (Object.keys(this.nodes).length === 0) this.root.append(h("p", { class: "muted empty" }, this.sessionId ? "no nodes yet: add one below" : "no session"));
    for (const nodeId of Object.keys(this.nodes)) this._updateCard(nodeId);
    this._renderConnections();
    this._fillConnectChoices();
    requestAnimationFrame(() => this._drawEdges());
  }

  _select(nodeId) {
    this.selectedNode = nodeId;
    for (const card of this.root.querySelectorAll(".node")) card.classList.toggle("selected", card.dataset.node === nodeId);
    this.dispatchEvent(new CustomEvent("selectnode", { detail: { nodeId, kind: this.nodes[nodeId]?.kind } }));
  }

  _updateCard(nodeId) {
    const card = this.root.querySelector(`.node[data-node="${CSS.escape(nodeId)}"]`);
    const node = this.nodes[nodeId];
    if (!card || !node) return;
    const error = node.state && typeof node.state === "object" ? node.state.error : null;
    card.classList.toggle("error", Boolean(error));
    card.querySelector(".node-state").textContent = error ? `error: ${error}` : "ok";
    card.querySelector(".node-stats").textContent = statsLine(node.stats);
  }

  _drawEdges() {
    if (!this._edges) return;
    const box = this.root.getBoundingClientRect();
    this._edges.setAttribute("width", String(box.width));
    this._edges.setAttribute("height", String(box.height));
    clear(this._edges);
    for (const c of this.connections) {
      const from = this.root.querySelector(`.node[data-node="${CSS.escape(c.from_node)}"]`);
      const to = this.root.querySelector(`.node[data-node="${CSS.escape(c.to_node)}"]`);
      if (!from || !to) continue;
      const a = from.getBoundingClientRect();
      const b = to.getBoundingClientRect();
      const x1 = a.right - box.left;
      const y1 = a.top + a.height / 2 - box.top;
      const x2 = b.left - box.left;
      const y2 = b.top + b.height / 2 - box.top;
      const bend = Math.max(30, (x2 - x1) / 2);
      this._edges.append(
        svg("path", { d: `M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}`, class: "edge" }),
        // At the curve's middle: edges into one node end at one point, their middles differ.
        svg("text", { x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 4, class: "edge-label", "text-anchor": "middle" }, c.to_pin),
      );
    }
  }

  _renderConnections() {
    const list = this._connectForm.querySelector("#connections");
    clear(list);
    for (const c of this.connections) {
      const label = `${c.from_node}.${c.from_pin} → ${c.to_node}.${c.to_pin}`;
      list.append(
        h(
          "li",
          { "data-connection": label },
          label,
          " ",
          h("button", { type: "button", class: "small", "aria-label": `disconnect ${label}`, onclick: () => this._disconnect(c) }, "disconnect"),
        ),
      );
    }
  }

  // ------------------------------------------------------------------ forms

  _setUpAddForm() {
    const kindSelect = this._addForm.querySelector("#add-node-kind");
    const paramsRoot = this._addForm.querySelector("#add-node-params");
    const showKind = () => {
      const kind = kindSelect.value;
      this._addParams = kind ? kindForm(this.schema[kind], {}, "", { foldOptional: true }) : null;
      clear(paramsRoot);
      if (this._addParams) paramsRoot.append(this._addParams.element);
    };
    kindSelect.replaceChildren(
      ...Object.keys(this.schema ?? {})
        .filter((kind) => this.schema[kind])
        .map((kind) => h("option", { value: kind }, kind)),
    );
    kindSelect.addEventListener("change", showKind);
    showKind();
    this._addForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const errorSlot = this._addForm.querySelector("#add-node-error");
      errorSlot.textContent = "";
      clearFieldErrors(paramsRoot);
      if (!this.sessionId) return;
      const nodeId = this._addForm.querySelector("#add-node-id").value.trim();
      try {
        await this.connection.request("addnode", { session_id: this.sessionId, node_id: nodeId, kind: kindSelect.value, params: this._addParams?.read() ?? {} });
        this._addForm.querySelector("#add-node-id").value = "";
        showKind();
      } catch (error) {
        const path = error.payload?.path ?? "";
        const shown = path.startsWith("/payload/params") && showFieldError(paramsRoot, path.slice("/payload/params".length), error.payload.message);
        if (!shown) errorSlot.textContent = error.message;
      }
    });
  }

  _setUpConnectForm() {
    this._connectForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const errorSlot = this._connectForm.querySelector("#connect-error");
      errorSlot.textContent = "";
      const from = this._connectForm.querySelector("#connect-from").value;
      const to = this._connectForm.querySelector("#connect-to").value;
      if (!this.sessionId || !from || !to) return;
      const [fromNode, fromPin] = splitPin(from);
      const [toNode, toPin] = splitPin(to);
      try {
        await this.connection.request("connect", { session_id: this.sessionId, from_node: fromNode, from_pin: fromPin, to_node: toNode, to_pin: toPin });
      } catch (error) {
        errorSlot.textContent = error.message;
      }
    });
  }

  _fillConnectChoices() {
    const fromSelect = this._connectForm.querySelector("#connect-from");
    const toSelect = this._connectForm.querySelector("#connect-to");
    const keepFrom = fromSelect.value;
    const keepTo = toSelect.value;
    const outputs = [];
    const inputs = [];
    const fed = new Set(this.connections.map((c) => `${c.to_node}.${c.to_pin}`));
    for (const nodeId of Object.keys(this.nodes).sort()) {
      const kindSchema = this.schema?.[this.nodes[nodeId].kind];
      for (const pin of kindSchema?.output_pins ?? []) outputs.push(`${nodeId}.${pin}`);
      const params = this.sessionId ? this.connection.shown(this.sessionId, nodeId, "params") : {};
      for (const pin of inputPins(kindSchema, params)) if (!fed.has(`${nodeId}.${pin}`)) inputs.push(`${nodeId}.${pin}`);
    }
    fromSelect.replaceChildren(...outputs.map((pin) => h("option", { value: pin }, pin)));
    toSelect.replaceChildren(...inputs.map((pin) => h("option", { value: pin }, pin)));
    if (outputs.includes(keepFrom)) fromSelect.value = keepFrom;
    if (inputs.includes(keepTo)) toSelect.value = keepTo;
  }

  async _disconnect(c) {
    const errorSlot = this._connectForm.querySelector("#connect-error");
    errorSlot.textContent = "";
    try {
      await this.connection.request("disconnect", { session_id: this.sessionId, ...c });
    } catch (error) {
      errorSlot.textContent = error.message;
    }
  }

  async removeNode(nodeId) {
    await this.connection.request("removenode", { session_id: this.sessionId, node_id: nodeId });
  }
}

function splitPin(value) {
  const dot = value.lastIndexOf(".");
  return [value.slice(0, dot), value.slice(dot + 1)];
}
