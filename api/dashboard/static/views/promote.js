// Promote and roll back: moving the `production` alias, after a confirmation that shows what the
// move does class by class (the compare endpoint's deltas against the current production version)
// and the promotion policy's verdict. Serving swaps versions without downtime.

import { get, paths, request } from "../api.js";
import { clear, errorBox, h } from "../dom.js";
import { deltaTable, verdictBox } from "./compare.js";

const dialog = document.getElementById("dialog");

let opened = 0; // the latest confirmation: an earlier one's late answers are dropped

// Production is read afresh here (another operator, or automatic promotion, may have moved it since
// the page was drawn), and so are the consequences.
export async function confirmProduction(name, target, onDone) {
  const token = ++opened;
  clear(dialog, h("p", { class: "muted" }, "Loading the consequences…"));
  dialog.showModal();
  let production = null;
  let body;
  try {
    production = (await get(paths.model(name))).production;
    body = production && production !== target ? await consequences(name, production, target)
      : [h("p", {}, production === target ? `v${target} is already production.`
        : `No version is in production yet: v${target} will serve requests that name no version.`)];
  } catch (err) {
    body = [errorBox(err)];
  }
  if (token !== opened || !dialog.open) return;
  const verb = production && target < production ? "Roll back to" : "Promote";
  const out = h("div", { id: "dialog-result" });
  const confirm = h("button", { class: "primary", id: "confirm-move", disabled: production === target, onclick: async () => {
    confirm.disabled = true;
    try {
      const moved = await request("PUT", paths.alias(name, "production"), { json: { version: target } });
      dialog.close();
      onDone(moved);
    } catch (err) {
      clear(out, errorBox(err));
      confirm.disabled = false;
    }
  } }, `${verb} v${target}`);
  const keep = h("button", { onclick: () => dialog.close(), id: "cancel-move" }, "Keep things as they are");
  clear(dialog, h("h2", { id: "dialog-title" }, `${verb} v${target} of ${name}?`), body, out, h("div", { class: "row end" }, keep, confirm));
  keep.focus();
}

async function consequences(name, production, target) {
  const cmp = await get(paths.compare(name, production, target));
  return [h("p", {}, `Requests without a version go to v${production} now; after this they go to v${target}. `,
    "Per class, what they would get:"), verdictBox(cmp.verdict), deltaTable(cmp, name)];
}

// Cancel a task, after a confirmation.
export async function confirmCancel(task, onDone) {
  const out = h("div", { id: "dialog-result" });
  const yes = h("button", { class: "danger", id: "confirm-cancel", onclick: async () => {
    yes.disabled = true;
    try {
      const t = await request("POST", paths.cancel(task.id));
      dialog.close();
      onDone(t);
    } catch (err) {
      clear(out, errorBox(err));
      yes.disabled = false;
    }
  } }, "Cancel the task");
  ++opened;
  clear(dialog,
    h("h2", { id: "dialog-title" }, `Cancel task ${task.id.slice(0, 8)} of ${task.model}?`),
    h("p", {}, task.status === "running"
      ? "It stops at its next step; the epochs done so far are not turned into a version."
      : "It will not start; later tasks of the model move up the queue."),
    out,
    h("div", { class: "row end" }, h("button", { onclick: () => dialog.close(), id: "keep-task" }, "Keep it"), yes));
  dialog.showModal();
  document.getElementById("keep-task").focus();
}
