// See it segment: validation images of a version's classes with the predicted mask next to the
// ground truth, and an upload box that runs the operator's own image through /segment. Colours are
// the classes' legend colours from GET /models/{name}/classes: masks are palette PNGs in those colours.

import { blob, paths, request } from "../api.js";
import { clear, errorBox, h, swatch } from "../dom.js";
import { navigate } from "../app.js";
import { loadModel } from "../model-data.js";
import { modelHeader } from "./versions.js";

const SAMPLES = 4;
const ALPHA = 150; // of the mask over the image, out of 255

export async function renderSegment(ctx, name) {
  const data = await loadModel(name, { scores: false });
  if (!ctx.current()) return;
  const { model, versions } = data;
  if (!versions.length) {
    clear(ctx.view, modelHeader(model), h("p", { class: "card empty" }, "No version yet: nothing to segment with."));
    return;
  }
  const enc = encodeURIComponent(name);
  const v = Number(ctx.query.get("v")) || model.production || versions[versions.length - 1].version;
  const select = h("select", { id: "segment-version", "aria-label": "Version", onchange: () => navigate(`#/m/${enc}/segment?v=${select.value}`) },
    [...versions].reverse().map((x) => h("option", { value: x.version, selected: x.version === v }, `v${x.version}${x.aliases.length ? ` (${x.aliases.join(", ")})` : ""}`)));
  const gallery = h("div", { class: "samples", id: "samples" }, h("p", { class: "muted" }, "Loading validation images…"));
  const result = h("div", { id: "upload-result" });
  const file = h("input", { type: "file", accept: "image/*", id: "upload-image", "aria-label": "An image to segment",
    onchange: () => file.files[0] && segmentUpload(name, v, file.files[0], data, result) });
  clear(ctx.view, modelHeader(model),
    h("section", { class: "card" }, h("div", { class: "row" }, h("label", {}, "Version ", select),
      h("span", { class: "muted small" }, "Left: the image. Middle: the ground truth. Right: what the version predicts."))),
    h("section", { class: "card" }, h("h2", {}, `Validation images of v${v}'s classes`), gallery),
    h("section", { class: "card" }, h("h2", {}, "Segment an image of yours"),
      h("p", {}, file, h("span", { class: "muted small" }, ` runs it through POST /models/${name}/segment?version=${v}`)), result));
  await showSamples(ctx, name, v, data, gallery);
}

async function showSamples(ctx, name, v, data, gallery) {
  let samples;
  try {
    samples = await request("GET", paths.samples(name, v, SAMPLES));
  } catch (err) {
    clear(gallery, errorBox(err));
    return;
  }
  if (!ctx.current()) return;
  if (!samples.length) {
    clear(gallery, h("p", { class: "muted" }, "The tasks of this lineage kept no validation images."));
    return;
  }
  const rows = samples.map((s) => h("figure", { class: "sample", "data-item": s.id }, h("p", { class: "muted small" }, "…")));
  clear(gallery, rows);
  // The first sample alone, then the rest: a key that may not segment is told once, not per image.
  const refused = await showSample(ctx, name, v, data, samples[0], rows[0], null);
  const skip = refused?.status === 403 ? refused : null;
  await Promise.all(samples.slice(1).map((s, i) => showSample(ctx, name, v, data, s, rows[i + 1], skip)));
  if (skip && ctx.current()) {
    gallery.prepend(h("div", { class: "error", role: "alert", id: "no-predictions" },
      `No predictions: ${skip.message}. The images and their ground truth are shown.`));
    document.getElementById("upload-image").disabled = true;
  }
  gallery.dataset.state = "done"; // every sample drawn (or its error shown)
}

// One sample: the image, its ground truth and (unless ``skip``) the prediction; returns the
// prediction's error, if any.
async function showSample(ctx, name, v, data, s, row, skip) {
  let failed = skip;
  try {
    const image = await blob(paths.itemImage(name, s.id));
    const [truth, predicted] = await Promise.all([
      blob(paths.itemMask(name, s.id)),
      skip ? null : request("POST", paths.segment(name, v), { body: form(image, s.stem), accept: "image/png" })
        .catch((err) => { failed = err; return null; }),
    ]);
    if (!ctx.current()) return failed;
    const [img, gt] = await Promise.all([createImageBitmap(image), createImageBitmap(truth)]);
    const pred = predicted ? await createImageBitmap(predicted) : null;
    clear(row,
      h("div", { class: "triple" }, canvasOf(img), overlay(img, gt),
        pred ? overlay(img, pred) : h("p", { class: "muted small" }, skip ? "no prediction" : failed?.message)),
      h("figcaption", { class: "small" }, `${s.stem} (task ${s.task_id.slice(0, 8)}, which added ${s.classes.join(", ")})`),
      legend(data, [...presentIn(gt, data), ...(pred ? presentIn(pred, data) : [])]));
  } catch (err) {
    clear(row, errorBox(err));
  }
  return failed;
}

function form(image, filename) {
  const fd = new FormData();
  fd.append("image", image, filename || "image");
  return fd;
}

async function segmentUpload(name, v, file, data, out) {
  clear(out, h("p", { class: "muted" }, "Segmenting…"));
  try {
    const res = await request("POST", paths.segment(name, v), { body: form(file, file.name) });
    const mask = new Blob([Uint8Array.from(atob(res.mask_png), (ch) => ch.charCodeAt(0))], { type: "image/png" });
    const [img, pred] = await Promise.all([createImageBitmap(file), createImageBitmap(mask)]);
    const total = res.width * res.height;
    clear(out,
      h("div", { class: "triple two" }, canvasOf(img), overlay(img, pred)),
      h("p", { class: "small" }, `v${res.model_version} of ${res.model}, ${res.width}×${res.height} px`),
      h("ul", { class: "legend", id: "upload-legend" }, Object.entries(res.classes).sort((a, b) => b[1] - a[1]).map(([cls, n]) =>
        h("li", { "data-class": cls }, swatch(data.colours.get(cls) || "#000"), `${cls} ${(100 * n / total).toFixed(1)} %`))));
  } catch (err) {
    clear(out, errorBox(err));
  }
}

function canvasOf(img) {
  const c = h("canvas", { width: img.width, height: img.height });
  c.getContext("2d").drawImage(img, 0, 0);
  return c;
}

// The image with the mask over it: background (black) and ignore (white) pixels left clear.
function overlay(img, mask) {
  const c = canvasOf(img);
  const m = h("canvas", { width: img.width, height: img.height });
  const mc = m.getContext("2d");
  mc.imageSmoothingEnabled = false;
  mc.drawImage(mask, 0, 0, img.width, img.height);
  const px = mc.getImageData(0, 0, img.width, img.height);
  for (let i = 0; i < px.data.length; i += 4) {
    const [r, g, b] = [px.data[i], px.data[i + 1], px.data[i + 2]];
    const clearPixel = (r === 0 && g === 0 && b === 0) || (r === 255 && g === 255 && b === 255);
    px.data[i + 3] = clearPixel ? 0 : ALPHA;
  }
  mc.putImageData(px, 0, 0);
  c.getContext("2d").drawImage(m, 0, 0);
  return c;
}

// The classes whose colours appear in a mask.
function presentIn(mask, data) {
  const c = h("canvas", { width: mask.width, height: mask.height }).getContext("2d");
  c.drawImage(mask, 0, 0);
  const px = c.getImageData(0, 0, mask.width, mask.height).data;
  const byHex = new Map(data.classes.map((k) => [k.hex, k.name]));
  const seen = new Set();
  for (let i = 0; i < px.length; i += 4) {
    const hex = `#${[px[i], px[i + 1], px[i + 2]].map((x) => x.toString(16).padStart(2, "0")).join("")}`;
    if (byHex.has(hex)) seen.add(byHex.get(hex));
  }
  return seen;
}

function legend(data, names) {
  const present = new Set(names);
  return h("ul", { class: "legend" }, data.classes.filter((c) => present.has(c.name)).map((c) =>
    h("li", { "data-class": c.name }, swatch(c.hex), c.name)));
}
