// Forms made from the node-kind schema (the `getschema` action, protocol/kind_schema.py): one control per
// field, nested objects as fieldsets, maps and lists as JSON text. The schema is the validator's, so a
// form offers what the server accepts; what it still refuses comes back as an error at its JSON pointer
// (`showFieldError`).

import { joinPointer } from "./causal.js";
import { h } from "./dom.js";

const NUMERIC = new Set(["integer", "number", "pixels"]);

/** A short label for a field's default ("auto", "required" or the value). */
function defaultText(field) {
  if (field.required) return "required";
  if (field.auto) return "auto";
  return JSON.stringify(field.default);
}

function describe(field) {
  return [field.doc, field.description?.replaceAll("\\|", "|"), `default: ${defaultText(field)}`].filter(Boolean).join(" — ");
}

/** `#RRGGBBAA` -> `#rrggbb` for <input type=color>, which has no alpha. */
function colorInputValue(value) {
  return typeof value === "string" && /^#[0-9A-Fa-f]{6}/.test(value) ? value.slice(0, 7).toLowerCase() : "#000000";
}

/**
 * One control for `field` at `pointer` with `value` (undefined: not set). Returns {element, read}: `read()`
 * gives the value to send, or undefined to leave the field out (blank, or unchanged from not set).
 */
export function fieldControl(name, field, pointer, value) {
  const id = `field-${pointer.replaceAll("/", "-")}`;
  const label = h("label", { for: id, title: describe(field) }, name);
  let input;
  let read;
  if (NUMERIC.has(field.type)) {
    input = h("input", { id, type: "number", min: field.min, max: field.max, step: field.type === "number" ? "any" : "1" });
    if (value !== undefined && value !== null) input.value = String(value);
    else if (field.default !== undefined) input.placeholder = String(field.default);
    read = () => (input.value.trim() === "" ? undefined : Number(input.value));
  } else if (field.type === "boolean") {
    input = h("input", { id, type: "checkbox" });
    input.checked = value ?? field.default ?? false;
    const initial = input.checked;
    read = () => (value === undefined && input.checked === initial ? undefined : input.checked);
  } else if (field.type === "enum") {
    input = h("select", { id }, h("option", { value: "" }, field.required ? "(choose)" : `(default: ${defaultText(field)})`), ...field.choices.map((choice) => h("option", { value: choice }, choice)));
    input.value = value ?? "";
    read = () => (input.value === "" ? undefined : input.value);
  } else if (field.type === "color") {
    input = h("input", { id, type: "color" });
    input.value = colorInputValue(value ?? field.default);
    const initial = input.value;
    read = () => (value === undefined && input.value === initial ? undefined : input.value.toUpperCase() + "FF");
  } else if (field.type === "object") {
    const inner = objectControls(field.fields, pointer, value ?? {});
    const fieldset = h("fieldset", { class: "nested", "data-pointer": pointer }, h("legend", { title: describe(field) }, name), ...inner.elements);
    return { element: fieldset, read: () => inner.read() };
  } else if (field.type === "string" || field.type === "path") {
    input = h("input", { id, type: "text", maxlength: field.max_length });
    if (value !== undefined && value !== null) input.value = value;
    else if (field.default !== undefined) input.placeholder = String(field.default);
    read = () => (input.value === "" && value === undefined ? undefined : input.value);
  } else {
    // map, list, or a type this panel does not know: JSON text.
    input = h("textarea", { id, rows: 2, spellcheck: "false" });
    input.value = value !== undefined ? JSON.stringify(value) : "";
    input.placeholder = field.default !== undefined ? JSON.stringify(field.default) : "JSON";
    read = () => {
      if (input.value.trim() === "") return undefined;
      try {
        return JSON.parse(input.value);
      } catch {
        return input.value; // sent as text: the server names the field and says what it wants
      }
    };
  }
  input.dataset.pointer = pointer;
  const row = h("div", { class: "field", "data-pointer": pointer }, label, input, h("div", { class: "field-error", role: "alert" }));
  return { element: row, read };
}

/** Controls for every field of an object schema; `read()` gives the object of the fields set. */
export function objectControls(fields, base, values) {
  const controls = Object.entries(fields).map(([name, field]) => [name, fieldControl(name, field, joinPointer(base, name), values?.[name])]);
  return {
    elements: controls.map(([, control]) => control.element),
    read() {
      const result = {};
      for (const [name, control] of controls) {
        const value = control.read();
        if (value !== undefined && !(typeof value === "object" && value !== null && !Array.isArray(value) && Object.keys(value).length === 0)) {
          result[name] = value;
        }
      }
      return result;
    },
  };
}

/**
 * A form for a node kind's params: `{element, read}`; field pointers start at `base` ("" for params).
 * With `foldOptional`, the fields that have a default (or are computed) sit in a folded "more" section.
 */
export function kindForm(kindSchema, values = {}, base = "", { foldOptional = false } = {}) {
  const controls = objectControls(kindSchema.fields, base, values);
  if (!foldOptional) return { element: h("div", { class: "kind-form" }, ...controls.elements), read: controls.read };
  const names = Object.keys(kindSchema.fields);
  const required = controls.elements.filter((_, index) => kindSchema.fields[names[index]].required);
  const optional = controls.elements.filter((_, index) => !kindSchema.fields[names[index]].required);
  const more = optional.length ? h("details", { class: "more-params" }, h("summary", {}, `${optional.length} optional params`), ...optional) : null;
  return { element: h("div", { class: "kind-form" }, ...required, more), read: controls.read };
}

/** Show `message` at the field whose pointer is `pointer` (or the nearest enclosing one) inside `root`. */
export function showFieldError(root, pointer, message) {
  let candidate = pointer;
  while (candidate !== null) {
    const row = root.querySelector(`.field[data-pointer="${CSS.escape(candidate)}"], fieldset[data-pointer="${CSS.escape(candidate)}"]`);
    if (row) {
      const slot = row.querySelector(":scope > .field-error") ?? row.appendChild(h("div", { class: "field-error", role: "alert" }));
      slot.textContent = message;
      row.classList.add("has-error");
      row.closest("details")?.setAttribute("open", ""); // a folded field with an error is shown
      return row;
    }
    if (candidate === "") break;
    candidate = candidate.slice(0, candidate.lastIndexOf("/"));
  }
  return null;
}

export function clearFieldErrors(root) {
  for (const row of root.querySelectorAll(".has-error")) {
    row.classList.remove("has-error");
    const slot = row.querySelector(":scope > .field-error");
    if (slot) slot.textContent = "";
  }
}
