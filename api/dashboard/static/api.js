// The REST API as the dashboard uses it: the key, requests, and one error type with the server's words.
// The key lives in sessionStorage (this browser tab's session) and travels only in the Authorization
// header: never in a URL, so never in an access log or the browser history.

const KEY_ITEM = "strata.apiKey";

export const key = {
  get: () => sessionStorage.getItem(KEY_ITEM),
  set: (value) => sessionStorage.setItem(KEY_ITEM, value.trim()),
  clear: () => sessionStorage.removeItem(KEY_ITEM),
};

export class ApiError extends Error {
  constructor(status, message, detail) {
    super(message);
    this.status = status;
    this.detail = detail;
  }
}

// The server's detail in words: a string, or FastAPI's list of validation errors with their location.
export function describeDetail(detail) {
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail.map((e) => {
      const where = (e.loc || []).filter((part) => part !== "body").join(".");
      return where ? `${where}: ${e.msg}` : e.msg;
    }).join("; ");
  }
  return detail == null ? "" : JSON.stringify(detail);
}

function errorFrom(status, body, fallback) {
  const detail = body && typeof body === "object" && "detail" in body ? body.detail : body;
  const words = describeDetail(detail) || fallback;
  if (status === 401) return new ApiError(status, `The key was refused: ${words}`, detail);
  if (status === 503) return new ApiError(status, `The service is unavailable for now: ${words}`, detail);
  return new ApiError(status, words, detail);
}

function headers(extra = {}) {
  const k = key.get();
  return k ? { Authorization: `Bearer ${k}`, ...extra } : extra;
}

async function readBody(response) {
  const type = response.headers.get("content-type") || "";
  if (type.includes("application/json")) return response.json();
  return response.text();
}

// fetch() with the key; JSON in and out; ApiError for any answer that is not 2xx.
export async function request(method, path, { json, body, accept } = {}) {
  const extra = {};
  if (json !== undefined) extra["Content-Type"] = "application/json";
  if (accept) extra.Accept = accept;
  let response;
  try {
    response = await fetch(path, { method, headers: headers(extra), body: json !== undefined ? JSON.stringify(json) : body });
  } catch (err) {
    throw new ApiError(0, `The service cannot be reached (${err.message}); is it running?`, null);
  }
  if (!response.ok) throw errorFrom(response.status, await readBody(response).catch(() => null), response.statusText);
  if (response.status === 204) return null;
  return accept && !accept.includes("json") ? response.blob() : readBody(response);
}

export const get = (path) => request("GET", path);
export const blob = (path) => request("GET", path, { accept: "*/*" });

// A multipart upload with progress (fetch cannot report upload progress; XMLHttpRequest can).
export function upload(path, formData, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    const k = key.get();
    if (k) xhr.setRequestHeader("Authorization", `Bearer ${k}`);
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded, e.total); };
    xhr.onerror = () => reject(new ApiError(0, "The upload did not reach the service (network error).", null));
    xhr.onload = () => {
      let parsed = xhr.responseText;
      try { parsed = JSON.parse(xhr.responseText); } catch { /* not JSON: keep the text */ }
      if (xhr.status >= 200 && xhr.status < 300) resolve(parsed);
      else reject(errorFrom(xhr.status, parsed, xhr.statusText));
    };
    xhr.send(formData);
  });
}

// Paths, built in one place (names are URL-encoded even though the service allows only safe ones).
const m = (name) => `/models/${encodeURIComponent(name)}`;
export const paths = {
  models: () => "/models",
  model: (name) => m(name),
  versions: (name) => `${m(name)}/versions`,
  version: (name, v) => `${m(name)}/versions/${encodeURIComponent(v)}`,
  scores: (name) => `${m(name)}/scores`,
  samples: (name, v, limit) => `${m(name)}/versions/${encodeURIComponent(v)}/samples?limit=${limit}`,
  itemImage: (name, id) => `${m(name)}/items/${id}/image`,
  itemMask: (name, id) => `${m(name)}/items/${id}/mask`,
  classes: (name) => `${m(name)}/classes`,
  alias: (name, alias) => `${m(name)}/aliases/${encodeURIComponent(alias)}`,
  // a, b: version numbers or aliases; left out, the service's defaults (the latest against production).
  compare: (name, a, b) => `${m(name)}/compare?${new URLSearchParams(Object.entries({ a, b }).filter(([, v]) => v != null))}`,
  modelTasks: (name, limit = 100) => `${m(name)}/tasks?limit=${limit}`,
  submit: (name) => `${m(name)}/tasks`,
  segment: (name, v) => `${m(name)}/segment?version=${encodeURIComponent(v)}`,
  tasks: (limit = 100) => `/tasks?limit=${limit}`,
  task: (id) => `/tasks/${encodeURIComponent(id)}`,
  cancel: (id) => `/tasks/${encodeURIComponent(id)}/cancel`,
};
