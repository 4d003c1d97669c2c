// Everything the model views show, read from the REST API in one go: the model, its versions, every
// version's per-class scores (GET /models/{name}/scores, one request whatever the number of versions),
// its classes with their colours (the one source of class colours).

import { get, paths } from "./api.js";

export async function loadModel(name, { scores = true } = {}) {
  const [model, versions, classes, matrix] = await Promise.all([
    get(paths.model(name)), get(paths.versions(name)), get(paths.classes(name)),
    scores ? get(paths.scores(name)) : { cells: [] },
  ]);
  // {version: {class name: cell}}: one answer for every version's per-class scores.
  const cells = new Map(versions.map((v) => [v.version, new Map()]));
  for (const c of matrix.cells) cells.get(c.version)?.set(c.name, c);
  const colours = new Map(classes.map((c) => [c.name, c.hex]));
  return { name, model, versions, cells, classes, colours };
}

// The version a class was introduced by: the first version (in number order) that has it as "new".
export function introducedBy(cells) {
  const first = new Map();
  for (const [version, row] of [...cells.entries()].sort((a, b) => a[0] - b[0])) {
    for (const c of row.values()) if (c.role === "new" && !first.has(c.name)) first.set(c.name, version);
  }
  return first;
}
