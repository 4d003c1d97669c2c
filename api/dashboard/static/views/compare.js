// Two versions side by side: per-class IoU with deltas, the largest drop first, and the promotion
// policy's verdict on the second replacing the first.

import { get, paths } from "../api.js";
import { badge, clear, h, pct, points, swatch } from "../dom.js";
import { flash, navigate } from "../app.js";
import { loadModel } from "../model-data.js";
import { modelHeader } from "./versions.js";
import { confirmProduction } from "./promote.js";

export async function renderCompare(ctx, name) {
  const data = await loadModel(name, { scores: false });
  if (!ctx.current()) return;
  const { model, versions } = data;
  if (!versions.length) {
    clear(ctx.view, modelHeader(model), h("p", { class: "card empty" }, "No version yet."));
    return;
  }
  // Without a choice in the address, the service's default: the latest version against production.
  const cmp = await get(paths.compare(name, ctx.query.get("a"), ctx.query.get("b")));
  if (!ctx.current()) return;
  const [a, b] = [cmp.a.version, cmp.b.version];
  const enc = encodeURIComponent(name);
  const pick = (id, value) => h("select", { id, "aria-label": id === "cmp-a" ? "Version a" : "Version b",
    onchange: () => navigate(`#/m/${enc}/compare?a=${document.getElementById("cmp-a").value}&b=${document.getElementById("cmp-b").value}`) },
  [...versions].reverse().map((v) => h("option", { value: v.version, selected: v.version === value },
    `v${v.version}${v.aliases.length ? ` (${v.aliases.join(", ")})` : ""}`)));
  const canMove = b !== model.production;
  clear(ctx.view, modelHeader(model),
    h("section", { class: "card" },
      h("div", { class: "row" }, h("label", {}, "a ", pick("cmp-a", a)), h("span", {}, "→"), h("label", {}, "b ", pick("cmp-b", b)),
        canMove ? h("button", { id: "promote-b", "data-version": b, onclick: () => confirmProduction(name, b, (moved) => {
          flash(`production of ${name} is now v${moved.version}${moved.previous ? ` (was v${moved.previous})` : ""}`);
          navigate(`#/m/${enc}/compare?a=${a}&b=${b}`);
        }) }, model.production && b < model.production ? `Roll back to v${b}` : `Promote v${b}`) : badge(`v${b} is production`, "prod")),
      h("p", { class: "small muted" }, summaryLine(cmp)),
      verdictBox(cmp.verdict),
      deltaTable(cmp, name)));
}

function summaryLine(cmp) {
  const m = (v) => `v${v.version}: mIoU all ${pct(v.miou.all)} %, old ${pct(v.miou.old)}, new ${pct(v.miou.new)}`;
  return `${m(cmp.a)} · ${m(cmp.b)}`;
}

export function verdictBox(verdict) {
  return h("div", { class: `verdict ${verdict.promote ? "ok" : "warn"}`, id: "verdict", role: "note" },
    h("strong", {}, verdict.promote ? "✓ " : "✗ ", verdict.summary),
    h("ul", {}, verdict.reasons.map((r) => h("li", {}, r))));
}

// Per-class IoU of a and b with the delta in points (negative: b is worse), as the API sorts them.
export function deltaTable(cmp, model) {
  const rows = cmp.classes.map((c) => {
    const d = c.delta == null ? null : c.delta * 100;
    const kind = d == null ? "" : d <= -1 ? "worse" : d >= 1 ? "better" : "same";
    return h("tr", { "data-class": c.name, "data-model": model },
      h("th", { scope: "row" }, swatch(c.hex), c.name),
      h("td", { class: "num", "data-field": "iou-a" }, c.in_a ? pct(c.iou_a) : "not a class"),
      h("td", { class: "num", "data-field": "iou-b" }, c.in_b ? pct(c.iou_b) : "not a class"),
      h("td", { class: `num delta ${kind}`, "data-field": "delta", "data-delta": c.delta ?? "" }, points(c.delta)),
      h("td", { class: "bar-cell" }, d == null ? null : h("span", { class: `bar ${kind}`, style: { width: `${Math.min(50, Math.abs(d) / 2)}%`, [d < 0 ? "right" : "left"]: "50%" } })));
  });
  return h("div", { class: "scroll" }, h("table", { class: "data compare", id: "compare-table" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Class"), h("th", { scope: "col" }, `v${cmp.a.version} IoU %`),
      h("th", { scope: "col" }, `v${cmp.b.version} IoU %`), h("th", { scope: "col" }, "Δ points"), h("th", { scope: "col" }, ""))),
    h("tbody", {}, rows)));
}
