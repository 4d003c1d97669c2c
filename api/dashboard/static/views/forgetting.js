// Forgetting at a glance: per-class IoU of every version (rows) and class (columns) as a heat map,
// and mIoU old / new / all across versions as a line chart.

import { clear, h, pct, swatch, textOn, viridis, viridisStops } from "../dom.js";
import { miouChart } from "../charts.js";
import { introducedBy, loadModel } from "../model-data.js";
import { modelHeader } from "./versions.js";

// A drop against the parent of at least this many IoU points is flagged in its cell.
const FLAG_DROP_POINTS = 1.0;

export async function renderForgetting(ctx, name) {
  const data = await loadModel(name);
  if (!ctx.current()) return;
  const { model, versions } = data;
  if (!versions.length) {
    clear(ctx.view, modelHeader(model), h("p", { class: "card empty" }, "No version yet: nothing to compare. ",
      h("a", { href: `#/m/${encodeURIComponent(name)}/submit` }, "Submit the first task"), "."));
    return;
  }
  const chartEl = h("div", { class: "chart", id: "miou-chart", "aria-label": "mIoU old, new and all across versions" });
  clear(ctx.view, modelHeader(model),
    h("div", { class: "split" },
      h("section", { class: "card heat-card" }, h("h2", {}, "Per-class IoU (%)"), legend(model), h("div", { class: "scroll" }, heatMap(data))),
      h("section", { class: "card chart-card" }, h("h2", {}, "mIoU across versions"), chartEl)));
  miouChart(chartEl, versions);
}

function legend(model) {
  return h("div", { class: "heat-legend small" },
    h("span", {}, "0"), h("span", { class: "scale", style: { background: `linear-gradient(to right, ${viridisStops.join(",")})` } }), h("span", {}, "100 %"),
    h("span", { class: "key introduced-key" }, "★ introduced by this version"),
    h("span", { class: "key drop-key" }, `▼ lost ≥ ${FLAG_DROP_POINTS} point against the parent (bold: over the policy's ${model.policy.max_old_miou_drop})`),
    h("span", { class: "key" }, "– not scored · blank: not a class of that version"));
}

function heatMap({ name, versions, cells, classes, model }) {
  const classNames = classes.map((c) => c.name);
  const colour = new Map(classes.map((c) => [c.name, c.hex]));
  const firstSeen = introducedBy(cells);
  const limit = model.policy.max_old_miou_drop;
  const head = h("tr", {}, h("th", { scope: "col", class: "corner" }, "version \\ class"),
    classNames.map((c) => h("th", { scope: "col", class: "class-head", title: firstSeen.has(c) ? `${c}: introduced by v${firstSeen.get(c)}` : c },
      h("span", { class: "rot" }, swatch(colour.get(c)), c, firstSeen.has(c) ? h("small", { class: "muted" }, ` v${firstSeen.get(c)}`) : null))));
  const rows = versions.map((v) => {
    const scores = cells.get(v.version);
    return h("tr", { "data-version": v.version },
      h("th", { scope: "row" }, `v${v.version}`, v.parent ? h("small", { class: "muted" }, ` ← v${v.parent}`) : null,
        v.version === model.production ? h("span", { class: "badge prod", title: "production" }, "prod") : null),
      classNames.map((c) => cell(name, v.version, c, scores.get(c), limit)));
  });
  return h("table", { class: "heat", id: "heatmap" }, h("thead", {}, head), h("tbody", {}, rows));
}

function cell(model, version, className, score, limit) {
  const attrs = { class: "cell", "data-model": model, "data-version": version, "data-class": className };
  if (!score) return h("td", { ...attrs, class: "cell absent", title: `v${version} does not know ${className}` });
  if (score.iou === null) return h("td", { ...attrs, class: "cell unscored", "data-iou": "", title: `${className} was not scored in v${version} (absent from its validation images)` }, h("span", { class: "v" }, "–"));
  const drop = score.forgetting == null ? 0 : score.forgetting * 100;
  const flagged = drop >= FLAG_DROP_POINTS;
  const classes = ["cell", score.role === "new" ? "introduced" : "", flagged ? "drop" : "", flagged && drop > limit ? "drop-severe" : ""];
  const title = `${className} in v${version}: IoU ${pct(score.iou)} %` +
    (score.role === "new" ? " (introduced here)" : "") + (score.forgetting != null ? `, ${drop >= 0 ? "lost" : "gained"} ${Math.abs(drop).toFixed(1)} points against the parent` : "");
  return h("td", { ...attrs, class: classes.filter(Boolean).join(" "), "data-iou": score.iou, title,
    style: { background: viridis(score.iou), color: textOn(score.iou) } },
  score.role === "new" ? h("span", { class: "mark", "aria-label": "introduced here" }, "★") : null,
  h("span", { class: "v" }, pct(score.iou)),
  flagged ? h("span", { class: "flag", "aria-label": `dropped ${drop.toFixed(1)} points` }, `▼${drop.toFixed(1)}`) : null);
}
