// Small DOM and formatting helpers. Text always goes in as text nodes (class names, errors and
// descriptions come from users), never as HTML.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = value;
    else if (name === "style" && typeof value === "object") Object.assign(el.style, value);
    else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(name, value === true ? "" : value);
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// IoU fractions are shown in percent with one decimal everywhere (heat map, tables, charts).
export const pct = (iou) => (iou === null || iou === undefined ? "–" : (iou * 100).toFixed(1));
export const points = (delta) => (delta === null || delta === undefined ? "–" : `${delta > 0 ? "+" : ""}${(delta * 100).toFixed(1)}`);

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso.endsWith("Z") || iso.includes("+") ? iso : `${iso}Z`);
  return d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function ago(iso) {
  if (!iso) return "";
  const d = new Date(iso.endsWith("Z") || iso.includes("+") ? iso : `${iso}Z`);
  const s = Math.max(0, (Date.now() - d.getTime()) / 1000);
  if (s < 60) return `${Math.round(s)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

// Viridis: perceptually uniform and readable with the common colour-vision deficiencies.
const VIRIDIS = ["#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725"];
const rgb = (hex) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));

function viridisRgb(t) {
  const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(x));
  const [a, b] = [rgb(VIRIDIS[i]), rgb(VIRIDIS[i + 1])];
  const f = x - i;
  return a.map((v, k) => Math.round(v + (b[k] - v) * f));
}

export const viridis = (t) => `rgb(${viridisRgb(t).join(",")})`;

// WCAG relative luminance and contrast ratio.
const luminance = (c) => {
  const [r, g, b] = c.map((v) => { const s = v / 255; return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
};
const contrast = (l1, l2) => (Math.max(l1, l2) + 0.05) / (Math.min(l1, l2) + 0.05);

// The text colour (near-black or white) with the higher contrast on the scale's colour at t.
export function textOn(t) {
  const l = luminance(viridisRgb(t));
  return contrast(l, luminance([17, 17, 17])) >= contrast(l, 1) ? "#111" : "#fff";
}
export const viridisStops = VIRIDIS;

// Okabe-Ito colours for lines (old / new / all), told apart by dash patterns too.
export const SERIES = {
  old: { stroke: "#0072B2", dash: [] },
  new: { stroke: "#E69F00", dash: [6, 4] },
  all: { stroke: "#009E73", dash: [2, 3] },
};

export function swatch(hex) {
  return h("span", { class: "swatch", style: { background: hex }, "aria-hidden": "true" });
}

export function badge(text, kind = "") {
  return h("span", { class: `badge ${kind}`.trim() }, text);
}

export function statusBadge(status) {
  return h("span", { class: `status status-${status}`, "data-status": status }, status);
}

export function errorBox(err) {
  return h("div", { class: "error", role: "alert" }, err.message || String(err));
}
