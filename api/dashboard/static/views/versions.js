// A model's versions: the lineage as a tree, and a table with scores, aliases, checkpoint size and
// the promotion decision; promote / roll back from each row.

import { badge, bytes, clear, h, pct, when } from "../dom.js";
import { flash, navigate } from "../app.js";
import { loadModel } from "../model-data.js";
import { confirmProduction } from "./promote.js";

export async function renderVersions(ctx, name) {
  const data = await loadModel(name);
  if (!ctx.current()) return;
  const { model, versions } = data;
  const enc = encodeURIComponent(name);
  clear(ctx.view,
    modelHeader(model),
    versions.length === 0 ? noVersions(name) : [
      h("section", { class: "card" }, h("h2", {}, "Lineage"), lineageTree(versions, model, enc)),
      h("section", { class: "card" }, h("h2", {}, `Versions (${versions.length})`),
        h("div", { class: "scroll" }, versionTable(name, versions, model, () => navigate(`#/m/${enc}`)))),
    ]);
}

export function modelHeader(model) {
  const p = model.policy;
  return h("header", { class: "model-header" },
    h("h1", {}, model.name, model.production ? badge(`production v${model.production}`, "prod") : badge("nothing in production")),
    model.description ? h("p", { class: "muted" }, model.description) : null,
    h("p", { class: "small muted" },
      `${model.architecture || "architecture set by the first task"} · ${model.classes} classes · `,
      `auto-promote ${p.auto_promote ? "on" : "off"}, max old-class drop ${p.max_old_miou_drop} points`,
      model.pending_tasks ? ` · ${model.pending_tasks} task(s) pending` : ""));
}

function noVersions(name) {
  const enc = encodeURIComponent(name);
  return h("section", { class: "card empty", id: "empty-state" },
    h("h2", {}, "No version yet"),
    h("p", {}, "A version is made by a training task. ", h("a", { href: `#/m/${enc}/submit` }, "Submit the first task"),
      ": its class names and a zip with images/ and masks/ (PNG masks whose value k is the k-th class of the list). ",
      "Or with curl:"),
    h("pre", {}, `curl -X POST http://${location.host}/models/${name}/tasks -H "Authorization: Bearer $KEY" \\
     -F 'spec={"classes": ["car", "person"]}' -F archive=@data.zip`),
    h("p", {}, "Its progress shows under ", h("a", { href: `#/m/${enc}/training` }, "Training"), "."));
}

function lineageTree(versions, model, enc) {
  const children = new Map();
  for (const v of versions) {
    const key = v.parent ?? 0;
    if (!children.has(key)) children.set(key, []);
    children.get(key).push(v);
  }
  const label = (v) => h("a", { class: `node${v.version === model.production ? " prod" : ""}`,
    href: `#/m/${enc}/compare?a=${v.parent ?? v.version}&b=${v.version}`, "data-version": v.version,
    title: `${v.method}, mIoU all ${pct(v.miou.all)} %` },
  h("strong", {}, `v${v.version}`), ` ${v.method} · ${pct(v.miou.all)}`,
  v.aliases.map((a) => badge(a, a === "production" ? "prod" : "")));
  // A version with one child continues at its own depth (a chain of dozens stays a column); only a
  // version with several children opens a level, one branch per child.
  const chain = (v) => {
    const kids = children.get(v.version) || [];
    if (kids.length === 1) return [h("li", { class: "next" }, label(v)), chain(kids[0])];
    return [h("li", { class: kids.length ? "fork" : "" }, label(v), kids.length
      ? h("ul", {}, kids.map((k) => h("li", { class: "branch" }, h("ul", { class: "chain" }, chain(k))))) : null)];
  };
  // Roots: base models, and versions whose parent was deleted.
  const known = new Set(versions.map((v) => v.version));
  const roots = versions.filter((v) => v.parent == null || !known.has(v.parent));
  return h("ul", { class: "tree chain", id: "lineage" }, roots.map(chain));
}

function versionTable(name, versions, model, refresh) {
  const enc = encodeURIComponent(name);
  const rows = [...versions].reverse().map((v) => {
    const decision = v.promotion;
    const isProd = v.version === model.production;
    const action = isProd ? badge("production", "prod")
      : h("button", { class: "small", "data-action": "promote", "data-version": v.version,
        onclick: () => confirmProduction(name, v.version, (moved) => {
          flash(`production of ${name} is now v${moved.version}${moved.previous ? ` (was v${moved.previous})` : ""}`);
          refresh();
        }) }, model.production && v.version < model.production ? "Roll back to" : "Promote");
    return h("tr", { "data-version": v.version, class: isProd ? "prod-row" : "" },
      h("th", { scope: "row" }, `v${v.version}`),
      h("td", {}, v.parent ? `v${v.parent}` : "–"),
      h("td", {}, h("a", { href: `#/tasks/${v.task_id}`, title: v.task_id }, v.task_id.slice(0, 8))),
      h("td", {}, v.method),
      h("td", { title: v.created_at }, when(v.created_at)),
      h("td", { class: "num", "data-field": "miou-old" }, pct(v.miou.old)),
      h("td", { class: "num", "data-field": "miou-new" }, pct(v.miou.new)),
      h("td", { class: "num", "data-field": "miou-all" }, pct(v.miou.all)),
      h("td", {}, v.aliases.map((a) => badge(a, a === "production" ? "prod" : ""))),
      h("td", { class: "num" }, bytes(v.checkpoint.bytes)),
      h("td", { class: "decision" }, decision ? h("details", {},
        h("summary", {}, h("span", { class: decision.promote ? "ok" : "warn" }, decision.promote ? "✓ " : "✗ "), decision.summary),
        h("ul", {}, decision.reasons.map((r) => h("li", {}, r)))) : "–"),
      h("td", { class: "actions" }, action, " ",
        h("a", { href: `#/m/${enc}/compare?a=${(isProd ? null : model.production) ?? v.parent ?? v.version}&b=${v.version}` }, "compare"), " ",
        h("a", { href: `#/m/${enc}/segment?v=${v.version}` }, "segment")));
  });
  return h("table", { class: "data", id: "versions-table" },
    h("thead", {}, h("tr", {}, ["Version", "Parent", "Task", "Method", "Created", "mIoU old", "mIoU new", "mIoU all",
      "Aliases", "Checkpoint", "Promotion decision", ""].map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows));
}
