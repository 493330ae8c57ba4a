// The inspector: the controls of the selected box (a layer, a text or an image overlay) or of the selected
// pipeline node (its params form, made from the schema).
//
// Every control is bound to the JSON pointer of its param (data-pointer); an edit goes through the
// connection as a PatchParams, and the control shows the shown params (server state with pending edits)
// again as soon as the user lets go of it. A refused edit shows the server's message at the control its
// pointer names, and the control returns to the server's value (causal.js drops the refused entry).

import { joinPointer, resolvePointer } from "./causal.js";
import { layoutPointer, sceneLayout, scopedPatch } from "./compositor.js";
import { h, clear } from "./dom.js";
import { clearFieldErrors, kindForm, showFieldError } from "./forms.js";

const LAYER_SLIDERS = [
  ["opacity", "opacity", 0, 1, 0.01],
  ["rotation_degrees", "rotation", -180, 180, 0.5],
  ["crop_zoom", "zoom", 1, 8, 0.05],
  ["crop_x", "pan x", 0, 1, 0.01],
  ["crop_y", "pan y", 0, 1, 0.01],
];
const LAYER_TOGGLES = [
  ["visible", "visible"],
  ["aspect_fit", "aspect fit"],
  ["mirror_horizontal", "mirror ↔"],
  ["mirror_vertical", "mirror ↕"],
];
const OVERLAY_SLIDERS = [
  ["opacity", "opacity", 0, 1, 0.01],
  ["rotation_degrees", "rotation", -180, 180, 0.5],
];
// Compositor params edited in the output view, not in the node form.
const COMPOSITOR_VIEW_FIELDS = new Set(["layers", "text_overlays", "image_overlays"]);

export class Inspector {
  constructor({ connection, root, title, view, schema }) {
    this.connection = connection;
    this.root = root;
    this.title = title;
    this.view = view;
    this.schema = schema;
    this.assets = [];
    this.target = null; // {type: "box", key} or {type: "node", sessionId, nodeId}
    this._controls = []; // {pointer, set(value), editing()}
    this._nodeForm = null;
    view.addEventListener("select", (event) => {
      if (event.detail.key) this.showBox(event.detail.key);
      else if (this.target?.type === "box") this.clear();
    });
    connection.addEventListener("shown", (event) => {
      if (this.target?.type === "box" && event.detail.sessionId === view.sessionId && event.detail.nodeId === view.nodeId) this.refresh();
    });
    view.addEventListener("rendered", () => {
      if (this.target?.type === "box") this.refresh();
    });
    connection.addEventListener("refused", (event) => this._onRefused(event.detail));
  }

  clear() {
    this.target = null;
    this._controls = [];
    this.title.textContent = "Inspector";
    clear(this.root).append(h("p", { class: "muted" }, "Select a box in the output, or a node in the pipeline."));
  }

  // ------------------------------------------------------------------ boxes

  showBox(key) {
    const item = this.view.selectedItem();
    if (!item) return;
    this.target = { type: "box", key, kind: item.kind, id: item.id, scene: item.scene ?? null };
    this._controls = [];
    clear(this.root);
    this.title.textContent = item.kind === "layer" ? `Layer ${item.id}` : `${item.kind === "text" ? "Text" : "Image"} ${item.id}`;
    const base = this._base(item);
    const rectBase = joinPointer(base, "rect");
    this.root.append(
      h("h3", {}, "Position"),
      h("div", { class: "grid4" }, ...["x", "y", "width", "height"].map((field) => this._rectField(field, rectBase))),
    );
    if (item.kind === "layer") {
      for (const [key, label, min, max, step] of LAYER_SLIDERS) this.root.append(this._slider(base, key, label, min, max, step));
      for (const [key, label] of LAYER_TOGGLES) this.root.append(this._toggle(base, key, label));
      this.root.append(this._circleToggle(base));
      // The input's sound in the compositor's mix (docs/AUDIO.md); an input without sound ignores them.
      const audio = joinPointer(base, "audio");
      this.root.append(
        h("h3", {}, "Sound"),
        this._slider(audio, "gain_db", "gain dB", -60, 24, 0.5),
        this._toggle(audio, "mute", "mute"),
        this._toggle(audio, "follow_video", "follows the picture"),
      );
    } else {
      if (item.kind === "text") {
        this.root.append(this._textField(base, "text", "text"), this._slider(base, "font_size", "size", 4, 256, 1), this._colorField(base, "color", "colour"));
      } else {
        this.root.append(this._assetField(base));
      }
      for (const [key, label, min, max, step] of OVERLAY_SLIDERS) this.root.append(this._slider(base, key, label, min, max, step));
    }
    this.root.append(this._zOrder(base, item));
    if (item.kind !== "layer") this.root.append(h("button", { type: "button", class: "danger", onclick: () => this._removeOverlay(item) }, "Delete"));
    this.refresh();
  }

  /** The pointer of the item in the params: under its scene's layout when the compositor has scenes. */
  _base(item) {
    const layout = layoutPointer(item.scene ?? null);
    if (item.kind === "layer") return joinPointer(layout, "layers", item.id);
    return joinPointer(layout, item.kind === "text" ? "text_overlays" : "image_overlays", String(this._indexOf(item)));
  }

  _indexOf(item) {
    const listKey = item.kind === "text" ? "text_overlays" : "image_overlays";
    return (sceneLayout(this.view.params(), item.scene ?? null)?.[listKey] ?? []).findIndex((overlay) => overlay.id === item.id);
  }

  /** The default of a compositor param at `pointer` (list indices and layer pins map to their item schema). */
  _default(pointer) {
    let field = { type: "object", fields: this.schema?.["video::compositor"]?.fields ?? {} };
    for (const token of pointer.split("/").slice(1)) {
      if (field.type === "object") field = field.fields?.[token];
      else if (field.type === "map") field = field.value;
      else if (field.type === "list") field = field.item;
      if (!field) return undefined;
    }
    return field.default;
  }

  /** The shown value at `pointer` of the compositor's params, else its schema default. */
  _value(pointer) {
    const value = resolvePointer(this.view.params(), pointer);
    return value !== undefined && value !== null ? value : this._default(pointer);
  }

  /** Send `value` for the param at `pointer` (a layer field, or an overlay field inside its list); null: back to the default. */
  _set(pointer, value) {
    const item = this.view.selectedItem();
    if (!item) return;
    const scene = item.scene ?? null;
    const base = layoutPointer(scene);
    if (!pointer.startsWith(base + "/")) return; // a control of a scene no longer shown
    const [, top, key, ...rest] = pointer.slice(base.length).split("/");
    let patch;
    if (top === "layers") {
      patch = { layers: { [key]: nest(rest, value) } };
    } else {
      const list = (sceneLayout(this.view.params(), scene)?.[top] ?? []).map((overlay) => ({ ...overlay }));
      const index = Number(key);
      if (!list[index]) return;
      // A list is replaced whole by a merge patch, so "back to the default" is the key left out of the item.
      list[index] = value === null && rest.length === 1 ? withoutKey(list[index], rest[0]) : { ...list[index], ...nest(rest, value) };
      patch = { [top]: list };
    }
    clearFieldErrors(this.root);
    this.connection.edit(this.view.sessionId, this.view.nodeId, scopedPatch(scene, patch));
  }

  _row(pointer, label, ...inputs) {
    return h("div", { class: "field", "data-pointer": pointer }, h("label", {}, label), ...inputs, h("div", { class: "field-error", role: "alert" }));
  }

  _bind(pointer, input, set, read = () => input.value) {
    let editing = false;
    input.dataset.pointer = pointer;
    input.addEventListener("input", () => {
      editing = true;
    });
    input.addEventListener("pointerdown", () => {
      editing = true;
    });
    input.addEventListener("change", () => {
      const value = read();
      editing = typeof value === "string" && value.trim() === "" && input.type === "number";
      set(value);
    });
    input.addEventListener("blur", () => {
      editing = false;
    });
    this._controls.push({ pointer, input, editing: () => editing, release: () => (editing = false) });
  }

  _rectField(field, rectBase) {
    const pointer = joinPointer(rectBase, field);
    const input = h("input", { type: "number", step: "1", "aria-label": field });
    const row = this._row(pointer, field, input);
    this._bind(pointer, input, (value) => {
      const item = this.view.selectedItem();
      if (!item || input.value.trim() === "") return;
      const rect = { ...item.rect, [field]: Number(value) };
      this.view.change(item, { rect, resized: field === "width" || field === "height" });
    });
    input._show = () => {
      const item = this.view.selectedItem();
      if (item) input.value = String(Math.round(item.rect[field]));
    };
    return row;
  }

  _slider(base, key, label, min, max, step) {
    const pointer = joinPointer(base, key);
    const range = h("input", { type: "range", min, max, step, "aria-label": label });
    const number = h("input", { type: "number", min, max, step, class: "number", "aria-label": `${label} value` });
    // The slider sends as it moves (each step one stamped edit, masked: no flicker); the number on commit.
    range.addEventListener("input", () => {
      number.value = range.value;
      this._set(pointer, Number(range.value));
    });
    this._bind(pointer, range, () => {});
    // A blank number is someone still typing, not a value: nothing is sent for it.
    this._bind(pointer, number, (value) => value.trim() !== "" && this._set(pointer, Number(value)));
    range._show = number._show = () => {
      const value = this._value(pointer);
      range.value = String(value ?? "");
      number.value = value === undefined || value === null ? "" : String(value);
    };
    return this._row(pointer, label, range, number);
  }

  _toggle(base, key, label) {
    const pointer = joinPointer(base, key);
    const input = h("input", { type: "checkbox", "aria-label": label });
    this._bind(pointer, input, () => this._set(pointer, input.checked));
    input._show = () => {
      input.checked = Boolean(this._value(pointer));
    };
    return h("div", { class: "field toggle", "data-pointer": pointer }, h("label", {}, input, " ", label), h("div", { class: "field-error", role: "alert" }));
  }

  _circleToggle(base) {
    const pointer = joinPointer(base, "crop_shape");
    const input = h("input", { type: "checkbox", "aria-label": "circle crop" });
    this._bind(pointer, input, () => this._set(pointer, input.checked ? "circle" : "rect"));
    input._show = () => {
      input.checked = this._value(pointer) === "circle";
    };
    return h("div", { class: "field toggle", "data-pointer": pointer }, h("label", {}, input, " circle crop"), h("div", { class: "field-error", role: "alert" }));
  }

  _textField(base, key, label) {
    const pointer = joinPointer(base, key);
    const input = h("input", { type: "text", "aria-label": label, maxlength: 1000 });
    this._bind(pointer, input, (value) => this._set(pointer, value));
    input._show = () => {
      input.value = String(this._value(pointer) ?? "");
    };
    return this._row(pointer, label, input);
  }

  _colorField(base, key, label) {
    const pointer = joinPointer(base, key);
    const input = h("input", { type: "color", "aria-label": label });
    input.addEventListener("input", () => this._set(pointer, input.value.toUpperCase() + "FF"));
    this._bind(pointer, input, (value) => this._set(pointer, value.toUpperCase() + "FF"));
    input._show = () => {
      const value = this._value(pointer);
      if (typeof value === "string") input.value = value.slice(0, 7).toLowerCase();
    };
    return this._row(pointer, label, input);
  }

  _assetField(base) {
    const pointer = joinPointer(base, "asset_path");
    const select = h("select", { "aria-label": "image" });
    this._bind(pointer, select, (value) => this._set(pointer, value));
    select._show = () => {
      const value = String(this._value(pointer) ?? "");
      const choices = this.assets.includes(value) || !value ? this.assets : [value, ...this.assets];
      if (select.options.length !== choices.length) select.replaceChildren(...choices.map((asset) => h("option", { value: asset }, asset)));
      select.value = value;
    };
    return this._row(pointer, "image", select);
  }

  _zOrder(base, item) {
    const pointer = joinPointer(base, "z_index");
    const shown = h("span", { class: "muted" });
    const move = (delta) => {
      const current = Number(this._value(pointer) ?? (item.kind === "layer" ? Number(item.id.slice(3)) : 1000));
      this._set(pointer, current + delta);
    };
    const row = this._row(
      pointer,
      "z order",
      h("button", { type: "button", "aria-label": "z up", onclick: () => move(1) }, "▲ up"),
      h("button", { type: "button", "aria-label": "z down", onclick: () => move(-1) }, "▼ down"),
      shown,
    );
    shown._show = () => {
      const value = this._value(pointer);
      shown.textContent = `z ${value ?? (item.kind === "layer" ? item.id.slice(3) : "")}`;
    };
    this._controls.push({ pointer, input: shown, editing: () => false, release: () => {} });
    return row;
  }

  _removeOverlay(item) {
    const listKey = item.kind === "text" ? "text_overlays" : "image_overlays";
    const scene = item.scene ?? null;
    const list = (sceneLayout(this.view.params(), scene)?.[listKey] ?? []).filter((overlay) => overlay.id !== item.id);
    this.connection.edit(this.view.sessionId, this.view.nodeId, scopedPatch(scene, { [listKey]: list }));
    this.view.select(null);
  }

  /** Show the shown params in every control the user is not holding. */
  refresh() {
    if (this.target?.type !== "box") return;
    const item = this.view.selectedItem();
    if (!item || item.key !== this.target.key) return;
    if ((item.scene ?? null) !== this.target.scene) {
      this.showBox(item.key); // another scene went on program: its controls point into that scene
      return;
    }
    for (const control of this._controls) {
      if (!control.editing() && control.input._show) control.input._show();
    }
  }

  // ------------------------------------------------------------------ pipeline nodes

  showNode(sessionId, nodeId, kind, onRemove) {
    this.view.select(null);
    this.target = { type: "node", sessionId, nodeId };
    this._controls = [];
    clear(this.root);
    this.title.textContent = `Node ${nodeId}`;
    const kindSchema = this.schema?.[kind];
    this.root.append(h("p", { class: "muted" }, kind, kindSchema ? ` — ${kindSchema.summary}` : ""));
    if (kindSchema) {
      const fields = Object.fromEntries(Object.entries(kindSchema.fields).filter(([name]) => kind !== "video::compositor" || !COMPOSITOR_VIEW_FIELDS.has(name)));
      const params = this.connection.shown(sessionId, nodeId, "params");
      const form = kindForm({ fields }, params);
      const formElement = h(
        "form",
        {
          class: "stack node-form",
          onsubmit: (event) => {
            event.preventDefault();
            clearFieldErrors(formElement);
            const values = form.read();
            const patch = {};
            for (const name of Object.keys(fields)) patch[name] = name in values ? values[name] : null;
            this.connection.edit(sessionId, nodeId, patch);
          },
        },
        form.element,
        h("div", { class: "row" }, h("button", { type: "submit" }, "Apply"), h("button", { type: "button", class: "danger", onclick: onRemove }, "Remove node")),
      );
      this._nodeForm = formElement;
      this.root.append(formElement);
    }
  }

  // ------------------------------------------------------------------ refusals

  _onRefused(detail) {
    if (detail.pointer === null || detail.pointer === undefined) return;
    if (this.target?.type === "box" && detail.sessionId === this.view.sessionId && detail.nodeId === this.view.nodeId) {
      // The refused control goes back to the server's value even if it still has the focus.
      for (const control of this._controls) if (control.pointer === detail.pointer) control.release();
      this.refresh();
      showFieldError(this.root, detail.pointer, detail.message);
    } else if (this.target?.type === "node" && detail.nodeId === this.target.nodeId && this._nodeForm) {
      showFieldError(this._nodeForm, detail.pointer, detail.message);
    }
  }
}

function withoutKey(object, key) {
  const copy = { ...object };
  delete copy[key];
  return copy;
}

/** `nest(["rect", "x"], 5)` -> `{rect: {x: 5}}`; `nest([], v)` is `v` itself when it is an object. */
function nest(tokens, value) {
  if (tokens.length === 0) return value;
  const [head, ...rest] = tokens;
  return { [head]: nest(rest, value) };
}
