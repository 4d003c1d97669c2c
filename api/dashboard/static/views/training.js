// Training: the queue (running with live progress, queued, recent failures with their errors,
// cancelled, finished) and one task's page with its loss curve over the whole run. Both poll the
// REST API and update in place.

import { get, paths } from "../api.js";
import { ago, clear, duration, errorBox, h, statusBadge, when } from "../dom.js";
import { dropChart, lossChart, lossData } from "../charts.js";
import { confirmCancel } from "./promote.js";
import { flash } from "../app.js";

const QUEUE_POLL_MS = 2000;
const TASK_POLL_MS = 1000;
const RECENT = 10;

const fraction = (p) => (p && p.epochs && p.steps ? Math.min(1, ((p.epoch - 1) + p.step / p.steps) / p.epochs) : 0);
const classesOf = (t) => Object.keys(t.classes).join(", ");

function progressBits(t) {
  const p = t.progress;
  if (!p) return { bar: 0, text: t.status === "running" ? "starting…" : "" };
  return {
    bar: fraction(p),
    text: `epoch ${p.epoch}/${p.epochs} · step ${p.step}/${p.steps}`,
    loss: p.loss == null ? "–" : p.loss.toFixed(4),
    rate: p.images_per_s == null ? "–" : `${p.images_per_s.toFixed(1)} images/s`,
    eta: p.eta_s == null ? "–" : duration(p.eta_s),
  };
}

export async function renderQueue(ctx, modelName) {
  const running = h("div", { class: "running", id: "running" });
  const rest = h("div");
  clear(ctx.view, h("h1", {}, modelName ? `Training · ${modelName}` : "Training queue · all models"),
    h("section", { class: "card" }, h("h2", {}, "Running"), running), rest);
  const cards = new Map();
  let shown = ""; // what the tables below were drawn from: redrawn only when it changes
  const refresh = async () => {
    let tasks;
    try {
      tasks = await get(modelName ? paths.modelTasks(modelName) : paths.tasks());
    } catch (err) {
      if (err.status === 401) throw err;
      clear(rest, errorBox(err));
      shown = "";
      return;
    }
    if (!ctx.current()) return;
    updateRunning(running, cards, tasks.filter((t) => t.status === "running"), refresh);
    const signature = JSON.stringify(tasks.filter((t) => t.status !== "running")
      .map((t) => [t.id, t.status, t.cancel_requested, t.finished_at, t.model_version]));
    if (signature === shown) return;
    shown = signature;
    const by = (s) => tasks.filter((t) => t.status === s);
    const queued = by("queued").reverse(); // oldest first: the order they will run in
    clear(rest,
      section("Queued", "queued", queued, ["#", "Task", "Model", "Classes", "Method", "Submitted", ""], (t, i) => [
        i + 1, taskLink(t), t.model, classesOf(t), t.method || "default", ago(t.created_at), cancelButton(t, refresh)]),
      section("Recent failures", "failed", by("failed").slice(0, RECENT), ["Task", "Model", "Classes", "Failed", "Error"], (t) => [
        taskLink(t), t.model, classesOf(t), ago(t.finished_at), h("span", { class: "error-text" }, t.error || "")]),
      section("Cancelled", "cancelled", by("cancelled").slice(0, RECENT), ["Task", "Model", "Classes", "Cancelled"], (t) => [
        taskLink(t), t.model, classesOf(t), ago(t.finished_at)]),
      section("Finished", "succeeded", by("succeeded").slice(0, RECENT), ["Task", "Model", "Classes", "Version", "Finished", "Took"], (t) => [
        taskLink(t), t.model, classesOf(t), t.model_version ? h("a", { href: `#/m/${encodeURIComponent(t.model)}` }, `v${t.model_version}`) : "–",
        ago(t.finished_at), t.started_at && t.finished_at ? duration((new Date(t.finished_at) - new Date(t.started_at)) / 1000) : "–"]));
  };
  await refresh();
  ctx.every(QUEUE_POLL_MS, refresh);
}

function section(title, status, tasks, headings, cells) {
  return h("section", { class: "card", "data-section": status },
    h("h2", {}, `${title} (${tasks.length})`),
    tasks.length === 0 ? h("p", { class: "muted" }, "None.") : h("div", { class: "scroll" }, h("table", { class: "data" },
      h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, tasks.map((t, i) => h("tr", { "data-task": t.id }, cells(t, i).map((c) => h("td", {}, c))))))));
}

const taskLink = (t) => h("a", { href: `#/tasks/${t.id}`, title: t.id }, t.id.slice(0, 8));

function cancelButton(t, refresh) {
  if (t.cancel_requested) return h("span", { class: "muted" }, "cancelling…");
  return h("button", { class: "small", "data-action": "cancel", onclick: () => confirmCancel(t, () => { flash(`task ${t.id.slice(0, 8)} cancelled`); refresh(); }) }, "Cancel");
}

// Running tasks as cards updated in place, so their charts keep their state between polls.
function updateRunning(container, cards, tasks, refresh) {
  const ids = new Set(tasks.map((t) => t.id));
  for (const [id, card] of cards) {
    if (!ids.has(id)) { card.el.remove(); dropChart(`queue-${id}`); cards.delete(id); }
  }
  if (!tasks.length && !container.querySelector(".muted")) container.append(h("p", { class: "muted" }, "Nothing is training."));
  if (tasks.length) container.querySelector(":scope > .muted")?.remove();
  for (const t of tasks) {
    let card = cards.get(t.id);
    if (!card) {
      card = progressCard(t, refresh, `queue-${t.id}`, 180);
      cards.set(t.id, card);
      container.append(card.el);
    }
    card.update(t);
  }
}

// A task's live progress: bar, numbers, loss curve; update(task) refreshes all of it.
function progressCard(t, refresh, chartName, chartHeight) {
  const bar = h("progress", { max: 1, value: 0 });
  const fields = Object.fromEntries(["text", "loss", "rate", "eta"].map((f) => [f, h("span", { "data-field": f })]));
  const chartEl = h("div", { class: "chart loss-chart", "data-chart": chartName });
  const cancel = h("span");
  const el = h("article", { class: "progress-card", "data-task": t.id },
    h("div", { class: "row" }, h("strong", {}, taskLink(t)), ` ${t.model}: ${classesOf(t)}`, h("span", { class: "grow" }), cancel),
    bar,
    h("div", { class: "row small" }, fields.text, h("span", {}, "loss ", fields.loss), fields.rate, h("span", {}, "eta ", fields.eta)),
    chartEl);
  let chart = null;
  let state = "";
  return {
    el,
    update(task) {
      const bits = progressBits(task);
      bar.value = bits.bar;
      for (const f of Object.keys(fields)) fields[f].textContent = bits[f] ?? "–";
      // The button is rebuilt only when the task's state changes: a rebuild under a click loses it.
      if (`${task.status}:${task.cancel_requested}` !== state) {
        state = `${task.status}:${task.cancel_requested}`;
        clear(cancel, ["queued", "running"].includes(task.status) ? cancelButton(task, refresh) : null);
      }
      const history = task.progress?.history || [];
      if (!chart && history.length && el.isConnected) chart = lossChart(chartName, chartEl, history, chartHeight);
      else if (chart) chart.setData(lossData(history));
    },
  };
}

// What reading the task's upload found: its format, images per class and what to look at
// (images without a new class, labels the spec did not name, overlaps resolved, files skipped).
function importReport(report) {
  if (!report) return null;
  const perClass = Object.entries(report.class_images);
  return h("section", { class: "card", id: "import-report" },
    h("h2", {}, "Import report"),
    h("p", {}, `${report.images} images read as `, h("code", {}, report.format), "."),
    perClass.length ? h("table", { class: "data" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Class"), h("th", { scope: "col" }, "Images showing it"))),
      h("tbody", {}, perClass.map(([name, n]) => h("tr", { "data-class": name }, h("td", {}, name), h("td", {}, n))))) : null,
    report.issues.length === 0 ? h("p", { class: "muted" }, "Nothing to report.") :
      h("ul", { class: "issues" }, report.issues.map((i) => h("li", { "data-issue": i.kind },
        h("strong", {}, `${i.count} `), i.message,
        i.labels ? h("span", {}, ": ", Object.entries(i.labels).map(([l, n]) => `${l} (${n})`).join(", ")) : null,
        i.pixels ? h("span", { class: "muted" }, ` · ${i.pixels} pixels`) : null,
        i.examples.length ? h("div", { class: "small muted" }, "e.g. ", i.examples.join(", ")) : null))));
}

// Where the task's time went (the API's timings): the upload's ingest, the queue, then the last
// attempt's phases; a slow phase says where to look (docs/operations.md, the training data path).
const PHASES = [["ingest_s", "ingest"], ["queued_s", "queued"], ["fetch_s", "data"], ["train_s", "training"],
  ["score_s", "scoring"], ["upload_s", "upload"], ["record_s", "record"]];

function timings(t) {
  const known = PHASES.filter(([key]) => t && t[key] !== null && t[key] !== undefined);
  if (!known.length) return null;
  const parts = known.map(([key, label]) => h("span", { class: "phase", "data-phase": label }, `${label} ${seconds(t[key])}`));
  return [h("dt", {}, "Time"), h("dd", { "data-field": "timings" },
    parts.flatMap((p, i) => (i ? [" · ", p] : [p])), t.total_s != null ? h("strong", {}, ` = ${duration(t.total_s)}`) : null)];
}

const seconds = (s) => (s < 10 ? `${s.toFixed(1)} s` : duration(s));

export async function renderTask(ctx, id) {
  let task = await get(paths.task(id));
  if (!ctx.current()) return;
  const info = h("dl", { class: "facts", id: "task-facts" });
  const card = progressCard(task, () => refresh(), "loss", 280);
  clear(ctx.view,
    h("h1", {}, "Task ", h("code", {}, task.id.slice(0, 8)), " ", h("span", { id: "task-status" }, statusBadge(task.status))),
    h("section", { class: "card" }, info),
    importReport(task.import_report),
    h("section", { class: "card" }, h("h2", {}, "Progress"), card.el));
  const show = (t) => {
    clear(document.getElementById("task-status"), statusBadge(t.status));
    clear(info,
      h("dt", {}, "Model"), h("dd", {}, h("a", { href: `#/m/${encodeURIComponent(t.model)}` }, t.model)),
      h("dt", {}, "Adds"), h("dd", {}, classesOf(t) || "–"),
      t.also_labelled.length ? [h("dt", {}, "Also labelled"), h("dd", {}, t.also_labelled.join(", "))] : null,
      h("dt", {}, "Method"), h("dd", {}, t.method || "default"),
      h("dt", {}, "Images"), h("dd", {}, `${t.items.train} train, ${t.items.val} validation`),
      h("dt", {}, "Parent"), h("dd", {}, t.parent_version ? `v${t.parent_version}` : "–"),
      h("dt", {}, "Version"), h("dd", { "data-field": "version" }, t.model_version ? h("a", { href: `#/m/${encodeURIComponent(t.model)}/compare?b=${t.model_version}` }, `v${t.model_version}`) : "–"),
      h("dt", {}, "Submitted"), h("dd", {}, when(t.created_at)),
      h("dt", {}, "Started"), h("dd", {}, when(t.started_at), t.attempts > 1 ? ` (attempt ${t.attempts})` : ""),
      h("dt", {}, "Finished"), h("dd", {}, when(t.finished_at)),
      timings(t.timings),
      t.error ? [h("dt", {}, "Error"), h("dd", { class: "error-text" }, t.error)] : null);
    card.update(t);
  };
  const problem = h("div", { "aria-live": "polite" });
  card.el.before(problem);
  const refresh = async () => {
    try {
      task = await get(paths.task(id));
      clear(problem);
    } catch (err) {
      if (err.status === 401) throw err; // back to the key form
      clear(problem, errorBox(err)); // e.g. an outage: shown, and the next poll tries again
      return;
    }
    if (ctx.current()) show(task);
  };
  show(task);
  ctx.every(TASK_POLL_MS, () => (["queued", "running"].includes(task.status) || !task.finished_at ? refresh() : null));
}
