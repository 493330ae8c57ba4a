// The compositor view: the live preview of a compositor's output with a box for every layer and overlay
// drawn over it, for direct manipulation.
//
// Where the boxes come from: a layer's box is its `rect` in the shown params (the server's params with
// this tab's pending edits laid over them, causal.js), so a dragged box follows the pointer at once; a
// layer without a rect (auto-PiP) shows the rect of the view data. An overlay's box is its params rect,
// its size from the view data's measured size when the params leave it out. Every box is positioned in
// canvas pixels scaled to the stage.
//
// Scenes: on a compositor with `scenes` the top-level layout is empty (the server refuses edits to it), so
// the boxes are the program scene's (the scene the output shows) and every edit patches
// `scenes/<program scene>/...`; a drag keeps the scene it began in, should program change under it.
//
// Editing: drag moves, corner handles resize (Shift keeps the aspect of the rect as the drag began), the
// handle above the box rotates (Shift snaps to 15 degrees), arrow keys nudge by 1 px (10 with Shift). Each
// change is one PatchParams through the connection (stamped, masked, sent at once). Overlays are list
// items: a merge patch replaces a list whole, so an overlay edit sends its whole list.

import { isObject, joinPointer } from "./causal.js";
import { h } from "./dom.js";

export const PREVIEW_WIDTH = 640;
export const PREVIEW_FPS = 30;
const STATS_WINDOW_MS = 2000;
const LATENCY_SAMPLES = 600;
const ROTATE_SNAP_DEGREES = 15;

/** The scene whose layout the boxes show and edit: the program scene when the params have scenes, else null. */
export function layoutScene(params) {
  const named = params?.scenes;
  const program = params?.program_scene;
  return isObject(named) && typeof program === "string" && isObject(named[program]) ? program : null;
}

/** The object that holds `layers`, `text_overlays` and `image_overlays` of `scene` (null: the top level). */
export function sceneLayout(params, scene) {
  return scene === null ? (params ?? {}) : (params?.scenes?.[scene] ?? {});
}

/** The params pointer of `scene`'s layout: "" (the top level) or "/scenes/NAME". */
export function layoutPointer(scene) {
  return scene === null ? "" : joinPointer("/scenes", scene);
}

/** A merge patch of a layout, put where `scene`'s layout lives in the params. */
export function scopedPatch(scene, patch) {
  return scene === null ? patch : { scenes: { [scene]: patch } };
}

/** The items with a box: `{key, kind, id, index, rect, rotation, hidden, scene}` in canvas pixels. */
export function boxItems(params, view) {
  const items = [];
  const scene = layoutScene(params);
  const layout = sceneLayout(params, scene);
  const layers = layout?.layers ?? {};
  const seen = new Set();
  for (const layer of view?.layers ?? []) {
    seen.add(layer.id);
    const rect = layers[layer.id]?.rect ?? { x: layer.x, y: layer.y, width: layer.width, height: layer.height };
    items.push({ key: `layer:${layer.id}`, kind: "layer", id: layer.id, rect, rotation: layers[layer.id]?.rotation_degrees ?? 0, hidden: false, scene });
  }
  for (const [pin, layer] of Object.entries(layers)) {
    // An invisible layer is left out of the view data; with a rect it still has a (dashed) box to find it by.
    if (!seen.has(pin) && layer?.visible === false && layer.rect) {
      items.push({ key: `layer:${pin}`, kind: "layer", id: pin, rect: layer.rect, rotation: layer.rotation_degrees ?? 0, hidden: true, scene });
    }
  }
  for (const [kind, listKey] of [["text", "text_overlays"], ["image", "image_overlays"]]) {
    const measured = new Map((view?.[listKey] ?? []).map((item) => [item.id, item]));
    (layout?.[listKey] ?? []).forEach((overlay, index) => {
      const seenBox = measured.get(overlay.id);
      const rect = {
        x: overlay.rect?.x ?? 0,
        y: overlay.rect?.y ?? 0,
        width: overlay.rect?.width ?? seenBox?.width ?? 0,
        height: overlay.rect?.height ?? seenBox?.height ?? 0,
      };
      items.push({ key: `${kind}:${overlay.id}`, kind, id: overlay.id, index, rect, rotation: overlay.rotation_degrees ?? 0, hidden: false, scene });
    });
  }
  return items;
}

/** The merge patch that gives `item` the rect (and rotation) `change`, against the shown params (in the item's scene). */
export function geometryPatch(params, item, change) {
  const scene = item.scene ?? null;
  if (item.kind === "layer") {
    const layer = {};
    if (change.rect) layer.rect = roundRect(change.rect);
    if (change.rotation !== undefined) layer.rotation_degrees = change.rotation;
    return scopedPatch(scene, { layers: { [item.id]: layer } });
  }
  const listKey = item.kind === "text" ? "text_overlays" : "image_overlays";
  const list = (sceneLayout(params, scene)?.[listKey] ?? []).map((overlay) => ({ ...overlay }));
  const overlay = list[item.index];
  if (!overlay) return null;
  if (change.rect) {
    const rect = roundRect(change.rect);
    overlay.rect = change.resized ? rect : { ...(overlay.rect ?? {}), x: rect.x, y: rect.y };
  }
  if (change.rotation !== undefined) overlay.rotation_degrees = change.rotation;
  return scopedPatch(scene, { [listKey]: list });
}

function roundRect(rect) {
  return {
    x: Math.round(rect.x),
    y: Math.round(rect.y),
    width: Math.max(1, Math.round(rect.width)),
    height: Math.max(1, Math.round(rect.height)),
  };
}

/** A corner drag: the opposite corner stays; with `keepAspect` the start rect's aspect is kept. */
export function resizedRect(start, corner, dx, dy, keepAspect) {
  const left = corner.includes("w");
  const top = corner.includes("n");
  let width = Math.max(1, start.width + (left ? -dx : dx));
  let height = Math.max(1, start.height + (top ? -dy : dy));
  if (keepAspect && start.width > 0 && start.height > 0) {
    const aspect = start.width / start.height;
    if (width / height > aspect) height = width / aspect;
    else width = height * aspect;
  }
  return {
    x: left ? start.x + start.width - width : start.x,
    y: top ? start.y + start.height - height : start.y,
    width,
    height,
  };
}

/** Degrees clockwise from "up" of the pointer seen from the box centre, in -180..180, 0.1 steps. */
export function rotationToward(centre, point, snap) {
  let degrees = (Math.atan2(point.y - centre.y, point.x - centre.x) * 180) / Math.PI + 90;
  if (degrees > 180) degrees -= 360;
  if (snap) degrees = Math.round(degrees / ROTATE_SNAP_DEGREES) * ROTATE_SNAP_DEGREES;
  return Math.round(degrees * 10) / 10;
}

export class CompositorView extends EventTarget {
  constructor({ connection, stage, canvas, boxes, empty, statsLabel, sceneLabel = null }) {
    super();
    this.sceneLabel = sceneLabel;
    this.connection = connection;
    this.stage = stage;
    this.canvas = canvas;
    this.boxesLayer = boxes;
    this.empty = empty;
    this.statsLabel = statsLabel;
    this.sessionId = null;
    this.nodeId = null;
    this.selected = null;
    this._elements = new Map(); // key -> box element (kept across renders: a drag keeps its pointer capture)
    this._items = new Map(); // key -> the item as last drawn
    this._drag = null;
    this._dirty = false;
    this._decoding = false;
    this._nextPreview = null;
    this._shownAt = []; // performance.now() of frames shown
    this._latencies = []; // ms from rendered to shown
    this._framesShown = 0;
    stage.addEventListener("keydown", (event) => this._onKey(event));
    stage.addEventListener("pointerdown", (event) => {
      if (event.target === stage || event.target === canvas || event.target === boxes) this.select(null);
    });
    new ResizeObserver(() => this.invalidate()).observe(stage);
    connection.addEventListener("shown", (event) => {
      if (event.detail.sessionId === this.sessionId && event.detail.nodeId === this.nodeId) this.invalidate();
    });
    connection.addEventListener("event", (event) => this._onEvent(event.detail));
    connection.addEventListener("resynced", (event) => {
      if (event.detail.sessionId === this.sessionId) this._subscribe(); // a subscription ends with its connection
    });
  }

  /** Watch `nodeId` of `sessionId` (null: nothing). */
  show(sessionId, nodeId) {
    if (this.sessionId === sessionId && this.nodeId === nodeId) return;
    const previous = this.sessionId && this.nodeId ? { session_id: this.sessionId, node_id: this.nodeId } : null;
    if (previous) this.connection.request("unsubscribepreview", previous).catch(() => {});
    this.sessionId = sessionId;
    this.nodeId = nodeId;
    this.select(null);
    this._shownAt = [];
    this._latencies = [];
    const context = this.canvas.getContext("2d");
    context.clearRect(0, 0, this.canvas.width, this.canvas.height);
    this.empty.hidden = Boolean(nodeId);
    this._subscribe();
    this.invalidate();
  }

  _subscribe() {
    if (!this.sessionId || !this.nodeId) return;
    const request = { session_id: this.sessionId, node_id: this.nodeId, max_width: PREVIEW_WIDTH, max_fps: PREVIEW_FPS };
    this.connection.request("subscribepreview", request).catch((error) => {
      this.statsLabel.textContent = `no preview: ${error.message}`;
    });
  }

  params() {
    return this.sessionId && this.nodeId ? this.connection.shown(this.sessionId, this.nodeId, "params") : {};
  }

  view() {
    return this.sessionId && this.nodeId ? this.connection.shown(this.sessionId, this.nodeId, "view") : {};
  }

  /** The scene the boxes belong to (null: the compositor has no scenes). */
  scene() {
    return layoutScene(this.params());
  }

  /** The shown layout the boxes are drawn from: the top-level params, or the program scene's. */
  layout() {
    return sceneLayout(this.params(), this.scene());
  }

  canvasSize() {
    const view = this.view();
    const params = this.params();
    return { width: view?.canvas_width ?? params?.width ?? 1280, height: view?.canvas_height ?? params?.height ?? 720 };
  }

  select(key) {
    if (this.selected === key) return;
    this.selected = key;
    this.invalidate();
    this.dispatchEvent(new CustomEvent("select", { detail: { key } }));
  }

  selectedItem() {
    return this.selected ? (this._items.get(this.selected) ?? null) : null;
  }

  /** Apply a geometry change to an item (a drag step, a nudge, the inspector's x/y/w/h). */
  change(item, change) {
    const patch = geometryPatch(this.params(), item, change);
    if (patch) this.connection.edit(this.sessionId, this.nodeId, patch);
  }

  invalidate() {
    if (this._dirty) return;
    this._dirty = true;
    requestAnimationFrame(() => {
      this._dirty = false;
      this.render();
    });
  }

  render() {
    const { width, height } = this.canvasSize();
    this.stage.style.aspectRatio = `${width} / ${height}`;
    const scale = this.stage.clientWidth / width;
    const items = this.nodeId ? boxItems(this.params(), this.view()) : [];
    const keep = new Set();
    for (const item of items) {
      keep.add(item.key);
      this._items.set(item.key, item);
      let element = this._elements.get(item.key);
      if (!element) {
        element = this._makeBox(item.key);
        this._elements.set(item.key, element);
        this.boxesLayer.append(element);
      }
      const { x, y, width: w, height: hgt } = item.rect;
      element.style.left = `${x * scale}px`;
      element.style.top = `${y * scale}px`;
      element.style.width = `${Math.max(1, w * scale)}px`;
      element.style.height = `${Math.max(1, hgt * scale)}px`;
      element.style.transform = item.rotation ? `rotate(${item.rotation}deg)` : "";
      element.classList.toggle("selected", item.key === this.selected);
      element.classList.toggle("hidden-layer", item.hidden);
      element.dataset.kind = item.kind;
      element.querySelector(".box-label").textContent = item.kind === "layer" ? item.id : `${item.kind}: ${item.id}`;
    }
    for (const [key, element] of this._elements) {
      if (!keep.has(key) && this._drag?.key !== key) {
        element.remove();
        this._elements.delete(key);
        this._items.delete(key);
      }
    }
    if (this.sceneLabel) {
      const scene = this.nodeId ? this.scene() : null;
      this.sceneLabel.textContent = scene === null ? "" : `boxes: scene ${scene} (program)`;
      this.sceneLabel.hidden = scene === null;
      this.sceneLabel.title = scene === null ? "" : `the boxes are the layout of scene ${scene}, the one on program; edits change that scene`;
    }
    this.dispatchEvent(new CustomEvent("rendered"));
  }

  _makeBox(key) {
    const box = h(
      "div",
      { class: "box", "data-key": key, tabindex: "-1" },
      h("span", { class: "box-label" }),
      ...["nw", "ne", "sw", "se"].map((corner) => h("span", { class: `handle handle-${corner}`, "data-corner": corner })),
      h("span", { class: "handle-rotate", title: "rotate (Shift: 15° steps)" }),
    );
    box.addEventListener("pointerdown", (event) => this._startDrag(event, key));
    box.addEventListener("pointermove", (event) => this._moveDrag(event));
    box.addEventListener("pointerup", (event) => this._endDrag(event));
    box.addEventListener("pointercancel", (event) => this._endDrag(event));
    return box;
  }

  _startDrag(event, key) {
    if (event.button !== 0) return;
    event.preventDefault();
    event.stopPropagation();
    this.select(key);
    this.stage.focus({ preventScroll: true });
    const item = this._items.get(key);
    if (!item) return;
    const target = event.target;
    const mode = target.classList.contains("handle-rotate") ? "rotate" : target.dataset.corner ? "resize" : "move";
    const box = event.currentTarget;
    box.setPointerCapture(event.pointerId);
    const stageRect = this.stage.getBoundingClientRect();
    this._drag = {
      key,
      mode,
      corner: target.dataset.corner,
      pointerId: event.pointerId,
      startX: event.clientX,
      startY: event.clientY,
      start: { ...item.rect },
      item, // kind, id, list index and scene as the drag began
      stageRect,
      scale: stageRect.width / this.canvasSize().width,
      last: null,
    };
  }

  _moveDrag(event) {
    const drag = this._drag;
    if (!drag || event.pointerId !== drag.pointerId) return;
    const item = this._items.get(drag.key);
    if (!item) return;
    const dx = (event.clientX - drag.startX) / drag.scale;
    const dy = (event.clientY - drag.startY) / drag.scale;
    let change;
    if (drag.mode === "move") {
      change = { rect: { ...drag.start, x: drag.start.x + dx, y: drag.start.y + dy } };
    } else if (drag.mode === "resize") {
      change = { rect: resizedRect(drag.start, drag.corner, dx, dy, event.shiftKey), resized: true };
    } else {
      const centre = { x: drag.start.x + drag.start.width / 2, y: drag.start.y + drag.start.height / 2 };
      const point = { x: (event.clientX - drag.stageRect.left) / drag.scale, y: (event.clientY - drag.stageRect.top) / drag.scale };
      change = { rotation: rotationToward(centre, point, event.shiftKey) };
    }
    const signature = JSON.stringify(change.rect ? roundRect(change.rect) : change.rotation);
    if (signature === drag.last) return; // nothing new to send for this pointer step
    drag.last = signature;
    this.change(drag.item, change);
  }

  _endDrag(event) {
    if (this._drag && event.pointerId === this._drag.pointerId) {
      this._drag = null;
      this.invalidate();
    }
  }

  _onKey(event) {
    const steps = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[event.key];
    const item = this.selectedItem();
    if (!steps || !item) return;
    event.preventDefault();
    const step = event.shiftKey ? 10 : 1;
    this.change(item, { rect: { ...item.rect, x: item.rect.x + steps[0] * step, y: item.rect.y + steps[1] * step } });
  }

  // ------------------------------------------------------------------ the preview

  _onEvent(payload) {
    if (payload.event !== "nodepreviewupdated" || payload.session_id !== this.sessionId || payload.node_id !== this.nodeId) return;
    // Decode one at a time, and only the latest: a backlog would only add latency.
    this._nextPreview = payload;
    if (!this._decoding) this._decodeNext();
  }

  async _decodeNext() {
    const payload = this._nextPreview;
    this._nextPreview = null;
    if (!payload) return;
    this._decoding = true;
    try {
      const binary = atob(payload.data);
      const bytes = new Uint8Array(binary.length);
      for (let index = 0; index < binary.length; index++) bytes[index] = binary.charCodeAt(index);
      const bitmap = await createImageBitmap(new Blob([bytes], { type: payload.content_type }));
      await new Promise((resolve) => requestAnimationFrame(resolve));
      if (payload.session_id === this.sessionId && payload.node_id === this.nodeId) {
        if (this.canvas.width !== bitmap.width || this.canvas.height !== bitmap.height) {
          this.canvas.width = bitmap.width;
          this.canvas.height = bitmap.height;
        }
        this.canvas.getContext("2d").drawImage(bitmap, 0, 0);
        this._recordShown(payload);
      }
      bitmap.close();
    } catch (error) {
      this.statsLabel.textContent = `preview: ${error.message}`;
    } finally {
      this._decoding = false;
      if (this._nextPreview) this._decodeNext();
    }
  }

  _recordShown(payload) {
    const now = performance.now();
    this._framesShown += 1;
    this._shownAt.push(now);
    while (this._shownAt.length && this._shownAt[0] < now - STATS_WINDOW_MS) this._shownAt.shift();
    if (typeof payload.rendered_at === "number") {
      // Wall clocks of the same machine: the daemon's time.time() and the page's.
      this._latencies.push(performance.timeOrigin + now - payload.rendered_at * 1000);
      if (this._latencies.length > LATENCY_SAMPLES) this._latencies.shift();
    }
    this.lastPreview = { frame_number: payload.frame_number, width: payload.width, height: payload.height };
    if (this._framesShown % 10 === 0) {
      const stats = this.previewStats();
      this.statsLabel.textContent = `preview ${stats.fps.toFixed(0)} fps · ${stats.latencyP50Ms.toFixed(0)} ms`;
    }
  }

  /** Frames shown per second over the last 2 s, and rendered-to-shown latency percentiles (ms). */
  previewStats() {
    const sorted = [...this._latencies].sort((a, b) => a - b);
    const at = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : NaN);
    const span = this._shownAt.length > 1 ? this._shownAt[this._shownAt.length - 1] - this._shownAt[0] : 0;
    return {
      framesShown: this._framesShown,
      fps: span > 0 ? ((this._shownAt.length - 1) * 1000) / span : 0,
      latencyP50Ms: at(0.5),
      latencyP95Ms: at(0.95),
      latencySamples: sorted.length,
      latencies: [...this._latencies],
    };
  }

  resetPreviewStats() {
    this._latencies = [];
    this._shownAt = [];
  }
}
