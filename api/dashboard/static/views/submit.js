// Submit a task from the page: class names, method, epochs and a zip of images/ and masks/ or an
// annotation tool's export (its format, and what to do with labels the classes do not name), sent
// as the same multipart request the API documents, with upload progress and the API's own messages.

import { paths, upload } from "../api.js";
import { clear, errorBox, h } from "../dom.js";
import { loadModel } from "../model-data.js";
import { modelHeader } from "./versions.js";

const FORMATS = [["", "recognise from the layout"], ["masks", "images/ + masks/"], ["coco", "COCO instances"],
  ["coco_panoptic", "COCO panoptic"], ["cvat_mask", "CVAT Segmentation mask 1.1"], ["voc", "Pascal VOC"],
  ["cityscapes", "Cityscapes label ids"], ["label_studio", "Label Studio brush (JSON)"]];
const names = (text) => text.split(",").map((s) => s.trim()).filter(Boolean);

export async function renderSubmit(ctx, name) {
  const { model, classes } = await loadModel(name, { scores: false });
  if (!ctx.current()) return;
  const known = classes.filter((c) => c.index !== 0).map((c) => c.name);
  const cls = h("input", { id: "submit-classes", name: "classes", required: true, placeholder: "car, person", size: 40 });
  const also = h("input", { id: "submit-also", name: "also_labelled", placeholder: known.slice(0, 3).join(", ") || "(none yet)", size: 40 });
  const method = h("select", { id: "submit-method", name: "method" },
    ctx.config.methods.map((m) => h("option", { value: m, selected: m === ctx.config.defaultMethod }, m)));
  const epochs = h("input", { id: "submit-epochs", name: "epochs", type: "number", min: 1, max: 1000, placeholder: "default" });
  const format = h("select", { id: "submit-format", name: "format" },
    FORMATS.map(([value, label]) => h("option", { value }, label)));
  const others = h("select", { id: "submit-other-labels", name: "other_labels" },
    [["reject", "refuse the upload, naming them"], ["ignore", "ignore their pixels"], ["background", "make them background"]]
      .map(([value, label]) => h("option", { value }, label)));
  const archive = h("input", { id: "submit-archive", name: "archive", type: "file", accept: ".zip,application/zip", required: true });
  const bar = h("progress", { max: 1, value: 0, hidden: true, id: "upload-progress" });
  const out = h("div", { id: "submit-result", "aria-live": "polite" });
  const button = h("button", { type: "submit", class: "primary" }, "Submit the task");
  const formEl = h("form", { class: "card form", id: "submit-form", onsubmit: async (e) => {
    e.preventDefault();
    const spec = { classes: names(cls.value), method: method.value };
    if (also.value.trim()) spec.also_labelled = names(also.value);
    if (epochs.value) spec.epochs = Number(epochs.value);
    if (format.value) spec.format = format.value;
    if (others.value !== "reject") spec.other_labels = others.value;
    const fd = new FormData();
    fd.append("spec", JSON.stringify(spec));
    fd.append("archive", archive.files[0], archive.files[0].name);
    button.disabled = true;
    bar.hidden = false;
    clear(out, h("span", { class: "muted" }, "Uploading…"));
    try {
      const task = await upload(paths.submit(name), fd, (sent, total) => {
        bar.value = sent / total;
        clear(out, h("span", { class: "muted" }, `Uploading… ${Math.round(100 * sent / total)} % of ${(total / 1048576).toFixed(1)} MiB`));
      });
      clear(out, h("div", { class: "flash flash-ok" }, `Task ${task.id.slice(0, 8)} is ${task.status} (${task.items.train} training and `,
        `${task.items.val} validation images). `, h("a", { href: `#/tasks/${task.id}`, id: "new-task-link" }, "Follow its progress")));
    } catch (err) {
      clear(out, errorBox(err));
    } finally {
      button.disabled = false;
      bar.hidden = true;
    }
  } },
  h("h2", {}, "Submit a task"),
  h("p", { class: "small muted" }, "The zip holds images/ and masks/ with the same file stems (a mask is a PNG whose value k labels the k-th class ",
    "of “New classes” then of “Also labelled”, 0 background and 255 ignored), or an annotation tool's export as the tool wrote it: ",
    "its labels are matched to the classes by name."),
  field("New classes (comma-separated)", cls),
  field(`Also labelled (classes the model knows${known.length ? `: ${known.join(", ")}` : ""})`, also),
  field("Method", method), field("Epochs", epochs), field("Format", format),
  field("Labels of the export not named above", others), field("Images and masks, or an export (.zip)", archive),
  h("div", { class: "row" }, button, bar), out);
  clear(ctx.view, modelHeader(model), formEl);
}

const field = (label, input) => h("label", { class: "field" }, h("span", {}, label), input);
