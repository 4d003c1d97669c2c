// The dashboard's shell: the key gate, the model picker, the navigation and a hash router.
// Views live in views/*.js; each renders into <main> and may poll through ctx.every(), which the
// router stops when the operator navigates away.

import { ApiError, get, key, paths } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { renderOverview } from "./views/overview.js";
import { renderVersions } from "./views/versions.js";
import { renderForgetting } from "./views/forgetting.js";
import { renderCompare } from "./views/compare.js";
import { renderQueue, renderTask } from "./views/training.js";
import { renderSegment } from "./views/segment.js";
import { renderSubmit } from "./views/submit.js";

export const config = JSON.parse(document.body.dataset.config || "{}");
const view = document.getElementById("view");
const picker = document.getElementById("model-picker");
const nav = document.getElementById("nav");
const keyStatus = document.getElementById("key-status");
const notice = document.getElementById("notice");

const MODEL_TABS = [
  ["", "Versions"], ["forgetting", "Forgetting"], ["compare", "Compare"],
  ["training", "Training"], ["segment", "Segment"], ["submit", "Submit"],
];

let timers = [];
let generation = 0;

export function navigate(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

export function flash(text, kind = "ok") {
  clear(notice, h("div", { class: `flash flash-${kind}` }, text, h("button", { class: "link", onclick: () => clear(notice), "aria-label": "Dismiss" }, "×")));
}

function parse() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(search || "") };
}

function stopTimers() {
  timers.forEach(clearInterval);
  timers = [];
}

function context(gen, query) {
  return {
    view, query, config,
    every(ms, fn) { timers.push(setInterval(() => { if (gen === generation) fn(); }, ms)); },
    current: () => gen === generation,
  };
}

async function route() {
  stopTimers();
  const gen = ++generation;
  const { parts, query } = parse();
  const ctx = context(gen, query);
  if (!key.get()) return showKeyForm();
  let models;
  try {
    models = await get(paths.models());
  } catch (err) {
    return handleError(err);
  }
  if (gen !== generation) return;
  fillPicker(models, parts[0] === "m" ? parts[1] : null);
  const modelName = parts[0] === "m" ? parts[1] : null;
  fillNav(modelName, parts);
  clear(view, h("p", { class: "muted" }, "Loading…"));
  try {
    if (parts.length === 0) await renderOverview(ctx, models);
    else if (parts[0] === "training") await renderQueue(ctx, null);
    else if (parts[0] === "tasks" && parts[1]) await renderTask(ctx, parts[1]);
    else if (parts[0] === "m" && modelName) {
      if (!models.some((m) => m.name === modelName)) throw new ApiError(404, `There is no model named “${modelName}” that this key may read.`);
      const tab = parts[2] || "";
      const render = { "": renderVersions, forgetting: renderForgetting, compare: renderCompare,
        training: (c, n) => renderQueue(c, n), segment: renderSegment, submit: renderSubmit }[tab];
      if (!render) throw new ApiError(404, `Unknown view “${tab}”.`);
      await render(ctx, modelName);
    } else throw new ApiError(404, "Unknown page.");
  } catch (err) {
    if (gen === generation) handleError(err);
  }
}

function handleError(err) {
  if (err instanceof ApiError && err.status === 401) {
    key.clear();
    return showKeyForm(err.message);
  }
  console.warn(err);
  clear(view, errorBox(err), h("p", {}, h("a", { href: "#/" }, "Back to the overview")));
}

function fillPicker(models, selected) {
  clear(picker, h("option", { value: "" }, models.length ? "— all models —" : "— no model yet —"),
    models.map((m) => h("option", { value: m.name, selected: m.name === selected }, m.name)));
}

picker.addEventListener("change", () => navigate(picker.value ? `#/m/${encodeURIComponent(picker.value)}` : "#/"));

function fillNav(modelName, parts) {
  const link = (href, text, active) => h("a", { href, class: active ? "active" : "", "aria-current": active ? "page" : false }, text);
  const global = [link("#/", "Overview", parts.length === 0), link("#/training", "Queue", parts[0] === "training")];
  const tabs = modelName
    ? MODEL_TABS.map(([tab, text]) => link(`#/m/${encodeURIComponent(modelName)}${tab ? `/${tab}` : ""}`, text, (parts[2] || "") === tab))
    : [];
  clear(nav, global, tabs.length ? h("span", { class: "sep" }, "|") : null, tabs);
  const k = key.get();
  clear(keyStatus, k ? `key ${k.slice(0, 14)}…` : "", k ? h("button", { class: "link", onclick: signOut }, "Forget key") : null);
}

function signOut() {
  key.clear();
  route();
}

function showKeyForm(message) {
  clear(nav);
  clear(keyStatus);
  clear(picker);
  const input = h("input", { type: "password", id: "api-key", name: "api-key", autocomplete: "off", required: true,
    placeholder: "strata_…", "aria-label": "API key", size: 48 });
  const form = h("form", { class: "card key-form", onsubmit: (e) => { e.preventDefault(); key.set(input.value); route(); } },
    h("h1", {}, "Sign in with an API key"),
    h("p", {}, "Paste a key: any key reads; promoting, rolling back, cancelling and submitting need an admin key. ",
      "On a fresh ", h("code", {}, "make run"), " the keys are in ", h("code", {}, "var/api-keys.txt"), "."),
    message ? h("div", { class: "error", role: "alert" }, message) : null,
    h("div", { class: "row" }, input, h("button", { type: "submit" }, "Open the dashboard")),
    h("p", { class: "muted small" }, "The key stays in this browser tab (sessionStorage) and is sent only in the Authorization header."));
  clear(view, form);
  input.focus();
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (e) => console.warn("unhandled", e.reason));
route();
