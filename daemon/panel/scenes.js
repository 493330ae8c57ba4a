// Studio mode for a compositor with scenes: the scene list (program and preview marked; a click puts a scene
// on preview, its "cut" button straight on program), Take, the transition (kind, direction, duration) and the
// T-bar (docs/PROTOCOL.md "take", docs/RENDERING.md "Transitions" and "The T-bar").
//
// Every control edits the compositor's params through the connection like any other edit (stamped, masked
// until acknowledged, causal.js), so the T-bar is a stream of `transition_position` edits at pointer rate:
// the tab shows its own bar where the hand is, and every other tab follows it. Letting go at the end of the
// bar takes (the server finishes the change with nothing left to run); letting go at 0 clears the bar;
// anywhere else the bar stays where it was left, holding the mix, as a vision mixer's lever does.
//
// A cut straight to program must not change the transition the params keep for the next change: it is one
// edit of the scenes that carries its cut as `_transition`, for that change only (PROTOCOL.md section 3).

import { h, clear } from "./dom.js";

export const TRANSITION_KINDS = ["cut", "fade", "slide", "push", "wipe"];
export const DIRECTIONS = ["left", "right", "up", "down"];
export const MOVING_KINDS = new Set(["slide", "push", "wipe"]);
export const MAX_DURATION_MS = 60_000;
// A bar let go this close to an end is at that end (a hand never lands on 1.000 exactly).
export const BAR_END_MARGIN = 0.02;

/** Whether a compositor's params have scenes (studio mode applies). */
export function hasScenes(params) {
  return Boolean(params?.scenes) && typeof params.scenes === "object" && Object.keys(params.scenes).length > 0;
}

/** The scenes in the params' order: `[{name, program, preview}]`. */
export function sceneList(params) {
  if (!hasScenes(params)) return [];
  return Object.keys(params.scenes).map((name) => ({ name, program: params.program_scene === name, preview: params.preview_scene === name }));
}

/** Whether a take can happen: a preview scene other than the program scene. */
export function canTake(params) {
  return hasScenes(params) && typeof params.preview_scene === "string" && params.preview_scene !== params.program_scene;
}

/** What a take will make of the params (the patch the server makes, PROTOCOL.md "take"), or null when it cannot. */
export function takePrediction(params) {
  if (!canTake(params)) return null;
  const patch = { program_scene: params.preview_scene, preview_scene: params.program_scene ?? null };
  if (params.transition_position !== undefined && params.transition_position !== null) patch.transition_position = null;
  return patch;
}

/** The transition of a cut straight to program, sent as the edit's `_transition`: the params keep theirs. */
export const CUT = Object.freeze({ kind: "cut" });

/**
 * The patch of a cut of `name` straight to program (shown with {@link CUT}, this once). A scene cut from
 * preview trades places with the program scene, as a take does; the T-bar is let go.
 */
export function cutPatch(params, name) {
  const cut = { program_scene: name };
  if (params?.preview_scene === name) cut.preview_scene = params.program_scene ?? null;
  if (params?.transition_position !== undefined && params?.transition_position !== null) cut.transition_position = null;
  return cut;
}

/** A bar value from the slider: clamped to 0..1, three decimals (a thousand steps over the bar). */
export function barPosition(value) {
  const number = Number(value);
  if (!Number.isFinite(number)) return 0;
  return Math.round(Math.min(1, Math.max(0, number)) * 1000) / 1000;
}

/** What letting go of the bar at `position` does: "take" at the end, "clear" at 0, else "hold". */
export function barRelease(position) {
  if (position >= 1 - BAR_END_MARGIN) return "take";
  if (position <= BAR_END_MARGIN) return "clear";
  return "hold";
}

/** One line on the program output's transition, from the view data (empty when none runs). */
export function transitionState(view) {
  const transition = view?.transition;
  if (!transition || typeof transition !== "object") return "";
  const percent = `${Math.round((Number(transition.progress) || 0) * 100)} %`;
  if (transition.manual) return `T-bar ${percent}: ${transition.from} → ${transition.to}`;
  return `${transition.kind} ${percent}: ${transition.from ?? "…"} → ${transition.to}`;
}

export class SceneControls {
  constructor({ connection, root }) {
    this.connection = connection;
    this.root = root;
    this.sessionId = null;
    this.nodeId = null;
    this._holding = false; // the hand is on the bar: the slider shows the hand, not the params
    this._moved = false; // the bar moved since it was last let go of
    this._dirty = false;
    this._build();
    connection.addEventListener("shown", (event) => {
      if (event.detail.sessionId === this.sessionId && event.detail.nodeId === this.nodeId) this.invalidate();
    });
    connection.addEventListener("refused", (event) => {
      const { sessionId, nodeId, message, pointer } = event.detail;
      if (sessionId === this.sessionId && nodeId === this.nodeId && SCENE_POINTERS.some((top) => pointer?.startsWith(top))) this._error(message);
    });
  }

  _build() {
    this.list = h("div", { class: "scene-list", role: "group", "aria-label": "scenes" });
    this.takeButton = h("button", { type: "button", class: "take", title: "preview to program with the transition", onclick: () => this.take() }, "Take");
    this.bar = h("input", { type: "range", class: "tbar", min: 0, max: 1, step: 0.001, value: 0, "aria-label": "T-bar" });
    // Let go is a pointerup anywhere (a hand leaves the bar past its end) or a change (the keyboard); one
    // move is let go of once, whichever of the two comes first.
    this.bar.addEventListener("pointerdown", () => {
      this._holding = true;
      window.addEventListener("pointerup", () => this._letGo(), { once: true });
      window.addEventListener("pointercancel", () => this._letGo(), { once: true });
    });
    this.bar.addEventListener("input", () => {
      this._holding = true;
      this._moved = true;
      this._edit({ transition_position: barPosition(this.bar.value) });
    });
    this.bar.addEventListener("change", () => this._letGo());
    this.bar.addEventListener("blur", () => {
      this._holding = false;
    });
    this.kind = h("select", { "aria-label": "transition kind" }, ...TRANSITION_KINDS.map((kind) => h("option", { value: kind }, kind)));
    this.kind.addEventListener("change", () => this._edit({ transition: { kind: this.kind.value } }));
    this.direction = h("select", { "aria-label": "transition direction" }, ...DIRECTIONS.map((direction) => h("option", { value: direction }, direction)));
    this.direction.addEventListener("change", () => this._edit({ transition: { direction: this.direction.value } }));
    this.duration = h("input", { type: "number", min: 0, max: MAX_DURATION_MS, step: 50, class: "number", "aria-label": "transition duration (ms)" });
    this.duration.addEventListener("change", () => {
      if (this.duration.value.trim() !== "") this._edit({ transition: { duration_ms: Math.round(Number(this.duration.value)) } });
    });
    this.state = h("span", { class: "muted transition-state", role: "status" });
    this.errorLine = h("div", { class: "field-error", role: "alert" });
    clear(this.root).append(
      this.list,
      h(
        "div",
        { class: "scene-tools" },
        this.takeButton,
        h("label", { class: "tbar-label" }, h("span", { class: "muted" }, "T-bar"), this.bar),
        h("label", {}, h("span", { class: "muted" }, "transition "), this.kind),
        this.direction,
        h("label", {}, this.duration, h("span", { class: "muted" }, " ms")),
        this.state,
      ),
      this.errorLine,
    );
  }

  /** Show the scene controls of `nodeId` (hidden when it has no scenes). */
  show(sessionId, nodeId) {
    this.sessionId = sessionId;
    this.nodeId = nodeId;
    this._holding = false;
    this._error("");
    this.render();
  }

  params() {
    return this.sessionId && this.nodeId ? this.connection.shown(this.sessionId, this.nodeId, "params") : {};
  }

  view() {
    return this.sessionId && this.nodeId ? this.connection.shown(this.sessionId, this.nodeId, "view") : {};
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
    const params = this.params();
    this.root.hidden = !hasScenes(params);
    if (this.root.hidden) return;
    const scenes = sceneList(params);
    const rows = new Map([...this.list.children].map((row) => [row.dataset.scene, row]));
    const wanted = scenes.map(({ name, program, preview }) => {
      const row = rows.get(name) ?? this._sceneRow(name);
      row.dataset.program = String(program);
      row.dataset.preview = String(preview);
      row.querySelector(".scene-badge").textContent = program ? "PGM" : preview ? "PVW" : "";
      row.querySelector(".scene-pick").setAttribute("aria-pressed", String(preview));
      row.querySelector(".scene-cut").disabled = program; // on program already: nothing to cut to
      return row;
    });
    if (wanted.length !== this.list.children.length || wanted.some((row, index) => this.list.children[index] !== row)) this.list.replaceChildren(...wanted);
    this.takeButton.disabled = !canTake(params);
    this.bar.disabled = !canTake(params);
    if (!this._holding) this.bar.value = String(params.transition_position ?? 0);
    const transition = params.transition ?? {};
    if (document.activeElement !== this.kind) this.kind.value = transition.kind ?? "cut";
    if (document.activeElement !== this.direction) this.direction.value = transition.direction ?? "left";
    this.direction.hidden = !MOVING_KINDS.has(this.kind.value);
    if (document.activeElement !== this.duration) this.duration.value = String(transition.duration_ms ?? 500);
    this.duration.disabled = this.kind.value === "cut";
    this.state.textContent = transitionState(this.view());
  }

  _sceneRow(name) {
    return h(
      "div",
      { class: "scene", "data-scene": name },
      h("button", { type: "button", class: "scene-pick", title: `put ${name} on preview`, onclick: () => this.putOnPreview(name) }, h("span", { class: "scene-name" }, name), h("span", { class: "scene-badge" })),
      h("button", { type: "button", class: "small scene-cut", "aria-label": `cut ${name} to program`, title: `cut ${name} straight to program`, onclick: () => this.cutToProgram(name) }, "cut"),
    );
  }

  putOnPreview(name) {
    this._edit({ preview_scene: name });
  }

  async take() {
    this._holding = false;
    this._error("");
    try {
      await this.connection.take(this.sessionId, this.nodeId, takePrediction(this.params()));
    } catch (error) {
      this._error(error.message);
    }
  }

  cutToProgram(name) {
    if (!this.sessionId || !this.nodeId) return;
    this._holding = false;
    this._error("");
    try {
      this.connection.editWithTransition(this.sessionId, this.nodeId, cutPatch(this.params(), name), { ...CUT });
    } catch (error) {
      this._error(error.message);
    }
  }

  _letGo() {
    this._holding = false;
    if (!this._moved) return;
    this._moved = false;
    const position = barPosition(this.bar.value);
    const release = barRelease(position);
    if (release === "take") this.take();
    else if (release === "clear") this._edit({ transition_position: null });
  }

  _edit(patch) {
    if (!this.sessionId || !this.nodeId) return;
    this._error("");
    this.connection.edit(this.sessionId, this.nodeId, patch);
  }

  _error(message) {
    this.errorLine.textContent = message ?? "";
  }
}

// The params the scene controls edit: a refusal at one of them is shown under the controls.
const SCENE_POINTERS = ["/program_scene", "/preview_scene", "/transition"];
