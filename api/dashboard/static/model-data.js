// Everything the model views show, read from the REST API in one go: the model, its versions with
// their per-class scores, its classes with their colours (the one source of class colours).

import { get, paths } from "./api.js";

const DETAIL_CONCURRENCY = 6;

async function mapLimited(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

export async function loadModel(name, { details = true } = {}) {
  const [model, versions, classes] = await Promise.all([
    get(paths.model(name)), get(paths.versions(name)), get(paths.classes(name)),
  ]);
  const full = details ? await mapLimited(versions, DETAIL_CONCURRENCY, (v) => get(paths.version(name, v.version))) : [];
  const byVersion = new Map(full.map((d) => [d.version, d]));
  const colours = new Map(classes.map((c) => [c.name, c.hex]));
  return { name, model, versions, details: byVersion, classes, colours };
}

// The version a class was introduced by: the first version (in number order) that has it as "new".
export function introducedBy(details) {
  const first = new Map();
  for (const d of [...details.values()].sort((a, b) => a.version - b.version)) {
    for (const c of d.classes) if (c.role === "new" && !first.has(c.name)) first.set(c.name, d.version);
  }
  return first;
}
