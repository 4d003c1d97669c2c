// Line charts drawn with uPlot (vendored in static/vendor). Every chart is registered in
// window.strata.charts under a name, so that tools and tests can read what it plots.

import { SERIES } from "./dom.js";

const registry = (window.strata = window.strata || { charts: {} }).charts;
const resizers = new Map();

window.addEventListener("resize", () => {
  for (const [chart, el] of resizers) chart.setSize({ width: widthOf(el), height: chart.height });
});

const widthOf = (el) => Math.max(260, el.clientWidth || 600);

function make(name, el, opts, data) {
  dropChart(name);
  const chart = new uPlot({ width: widthOf(el), ...opts }, data, el);
  registry[name] = chart;
  resizers.set(chart, el);
  return chart;
}

const axisStyle = { stroke: "#444", grid: { stroke: "#e6e6e6" }, ticks: { stroke: "#ccc" } };

// mIoU old / new / all (in %) across versions: x is the version number, one point per version.
export function miouChart(el, versions) {
  const xs = versions.map((v) => v.version);
  const series = ["old", "new", "all"].map((part) => versions.map((v) => (v.miou[part] == null ? null : +(v.miou[part] * 100).toFixed(1))));
  const line = (part) => ({
    label: `mIoU ${part}`, stroke: SERIES[part].stroke, dash: SERIES[part].dash, width: 2,
    points: { show: true, size: 7 }, spanGaps: true, value: (_, v) => (v == null ? "–" : `${v.toFixed(1)} %`),
  });
  return make("miou", el, {
    height: 260,
    scales: { x: { time: false }, y: { range: [0, 100] } },
    axes: [{ ...axisStyle, label: "version", incrs: [1, 2, 5, 10, 20, 50], values: (_, ticks) => ticks.map((t) => `v${t}`) },
      { ...axisStyle, label: "IoU %" }],
    series: [{ label: "version", value: (_, v) => (v == null ? "" : `v${v}`) }, line("old"), line("new"), line("all")],
  }, [xs, ...series]);
}

// The loss over a whole run: x in fractional epochs, as the task's progress history stores it.
export function lossChart(name, el, history, height = 220) {
  const compact = height < 200; // a queue card: no legend, the numbers are beside it
  return make(name, el, {
    height,
    legend: { show: !compact },
    scales: { x: { time: false } },
    axes: [{ ...axisStyle, label: "epoch" }, { ...axisStyle, label: "loss" }],
    series: [{ label: "epoch", value: (_, v) => (v == null ? "" : v.toFixed(2)) },
      { label: "loss", stroke: SERIES.old.stroke, width: 2, value: (_, v) => (v == null ? "–" : v.toFixed(4)) }],
  }, lossData(history));
}

export const lossData = (history) => [history.map((p) => p[0]), history.map((p) => p[1])];

export function dropChart(name) {
  const chart = registry[name];
  if (!chart) return;
  chart.destroy();
  resizers.delete(chart);
  delete registry[name];
}

// Charts whose element left the page (the operator navigated away, a task card went).
export function dropDetachedCharts() {
  for (const [name, chart] of Object.entries(registry)) if (!chart.root.isConnected) dropChart(name);
}
