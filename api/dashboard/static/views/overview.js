// The overview: every model this key may read, what it serves and what it is doing.

import { request, paths } from "../api.js";
import { ago, badge, clear, errorBox, h, statusBadge } from "../dom.js";
import { navigate } from "../app.js";

export async function renderOverview(ctx, models) {
  const cards = models.map((m) => modelCard(m));
  clear(ctx.view,
    h("h1", {}, "Models"),
    models.length ? h("div", { class: "cards", id: "models" }, cards) : emptyState(),
    createForm());
}

function modelCard(m) {
  const url = `#/m/${encodeURIComponent(m.name)}`;
  const last = m.last_task;
  return h("article", { class: "card model-card", "data-model": m.name },
    h("h2", {}, h("a", { href: url }, m.name)),
    m.description ? h("p", { class: "muted" }, m.description) : null,
    h("dl", { class: "facts" },
      h("dt", {}, "Production"), h("dd", { "data-field": "production" }, m.production ? badge(`v${m.production}`, "prod") : "none yet"),
      h("dt", {}, "Latest"), h("dd", {}, m.latest ? `v${m.latest}` : "–"),
      h("dt", {}, "Versions"), h("dd", {}, m.versions),
      h("dt", {}, "Classes"), h("dd", {}, m.classes),
      h("dt", {}, "Last step"), h("dd", {}, last
        ? [statusBadge(last.status), " ", h("a", { href: `#/tasks/${last.id}` }, ago(last.finished_at || last.created_at))]
        : "no task yet"),
      h("dt", {}, "Pending"), h("dd", {}, m.pending_tasks ? h("a", { href: `${url}/training` }, `${m.pending_tasks} task(s)`) : "0")),
    last && last.status === "failed" && last.error ? h("p", { class: "error small" }, last.error) : null,
    h("p", { class: "links" }, h("a", { href: url }, "Versions"), h("a", { href: `${url}/forgetting` }, "Forgetting"),
      h("a", { href: `${url}/compare` }, "Compare"), h("a", { href: `${url}/submit` }, "Submit a task")));
}

function emptyState() {
  return h("section", { class: "card empty", id: "empty-state" },
    h("h2", {}, "No model yet"),
    h("p", { class: "muted small" }, "(None that this key may read: a key limited to some models sees only those.)"),
    h("p", {}, "A model is a named lineage of versions. Create one below (an admin key for every model is needed), ",
      "then submit its first task: the class names, and a zip with images/ and masks/ (PNG masks whose value k is the k-th class)."),
    h("pre", {}, `curl -X POST http://${location.host}/models -H "Authorization: Bearer $KEY" \\
     -H "Content-Type: application/json" -d '{"name": "street-cam"}'
curl -X POST http://${location.host}/models/street-cam/tasks -H "Authorization: Bearer $KEY" \\
     -F 'spec={"classes": ["car", "person"]}' -F archive=@data.zip`));
}

function createForm() {
  const name = h("input", { name: "name", required: true, placeholder: "street-cam", pattern: "[A-Za-z0-9][A-Za-z0-9._\\-]{0,63}", "aria-label": "Model name" });
  const description = h("input", { name: "description", placeholder: "what it watches (optional)", "aria-label": "Description", size: 40 });
  const out = h("div");
  const form = h("form", { class: "card row", id: "create-model", onsubmit: async (e) => {
    e.preventDefault();
    clear(out);
    try {
      const m = await request("POST", paths.models(), { json: { name: name.value.trim(), description: description.value } });
      navigate(`#/m/${encodeURIComponent(m.name)}/submit`);
    } catch (err) {
      clear(out, errorBox(err));
    }
  } }, h("strong", {}, "New model"), name, description, h("button", { type: "submit" }, "Create"), out);
  return form;
}
