// The dashboard's shell: the key gate, the model picker, the navigation and a hash router.
// Views live in views/*.js; each renders into <main> and may poll through ctx.every(), which the
// router stops when the operator navigates away.

import { ApiError, get, key, paths } from "./api.js";
import { clear, errorBox, h } from "./dom.js";
import { dropDetachedCharts } from "./charts.js";
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

let keepNoticeUntil = 0; // a flash survives the re-render that follows the action it reports

export function flash(text, kind = "ok") {
  keepNoticeUntil = Date.now() + 1000;
  clear(notice, h("div", { class: `flash flash-${kind}` }, text, h("button", { class: "link", onclick: () => clear(notice), "aria-label": "Dismiss" }, "×")));
}

function parse() {
  const [path, search] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { parts, query: new URLSearchParams(search || "") };
}

function stopTimers() {
  timers.forEach(clearTimeout);
  timers = [];
}

// ctx.every(ms, fn): fn again ms after the previous call ended (never two at once, so answers
// cannot arrive out of order), until the operator navigates away.
function context(gen, query) {
  const ctx = {
    view, query, config,
    every(ms, fn) {
      const tick = async () => {
        if (gen !== generation) return;
        try { await fn(); } catch (err) { ctx.fail(err); }
        if (gen === generation) timers.push(setTimeout(tick, ms));
      };
      timers.push(setTimeout(tick, ms));
    },
    current: () => gen === generation,
    fail: (err) => { if (gen === generation) handleError(err); },
  };
  return ctx;
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
    if (gen === generation) handleError(err);
    return;
  }
  if (gen !== generation) return;
  fillPicker(models, parts[0] === "m" ? parts[1] : null);
  const modelName = parts[0] === "m" ? parts[1] : null;
  fillNav(modelName, parts);
  if (Date.now() > keepNoticeUntil) clear(notice);
  clear(view, h("p", { class: "muted" }, "Loading…"));
  dropDetachedCharts(); // the previous view's
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

const RETRY_MS = 5000;

// An error that ends a view: 401 back to the key form; an outage (503, no answer) retried by itself.
export function handleError(err) {
  if (err instanceof ApiError && err.status === 401) {
    key.clear();
    return showKeyForm(err.message);
  }
  if (err instanceof ApiError) console.warn(err.message); else console.error(err); // a fault of the page
  const outage = err instanceof ApiError && (err.status === 503 || err.status === 0);
  if (outage) {
    const gen = generation;
    timers.push(setTimeout(() => { if (gen === generation) route(); }, RETRY_MS));
  }
  fillKeyStatus();
  clear(view, errorBox(err),
    outage ? h("p", { class: "muted" }, `Trying again in ${RETRY_MS / 1000} s…`) : null,
    h("p", { class: "row" }, h("button", { onclick: route, id: "retry" }, "Try again"),
      h("a", { href: "#/", onclick: () => navigate("#/") }, "Back to the overview")));
}

function fillPicker(models, selected) {
  picker.parentElement.hidden = false;
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
  fillKeyStatus();
}

function fillKeyStatus() {
  const k = key.get();
  // No more of the key than the service itself shows of it (its prefix).
  clear(keyStatus, k ? `key ${k.slice(0, 12)}…` : "", k ? h("button", { class: "link", onclick: signOut }, "Forget key") : null);
}

function signOut() {
  key.clear();
  route();
}

function showKeyForm(message) {
  clear(nav);
  clear(keyStatus);
  clear(picker);
  picker.parentElement.hidden = true; // nothing to pick before a key is accepted
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
