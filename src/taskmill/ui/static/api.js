// The JSON API, with the key the user entered. The key lives in sessionStorage: it is
// gone when the tab closes and is never put in a URL.

const KEY = "taskmill.apiKey";

export class ApiError extends Error {
  constructor(status, type, message, fields = []) {
    super(message);
    this.status = status;
    this.type = type;
    this.fields = fields; // [{field, reason}] of a 422: which input to mark
  }

  /** What to tell the user, in their terms. */
  get explanation() {
    if (this.status === 0) return "Cannot reach taskmill. Retrying…";
    if (this.status === 401) return "The API key was not accepted: it may be mistyped, expired or revoked.";
    if (this.status === 403) return `This key is not allowed to do that: ${this.message}.`;
    if (this.status === 429) return "Too many failed attempts from this address; wait a minute.";
    if (this.status === 404) return "Not found (or it belongs to another merchant).";
    return this.message || `Request failed (${this.status}).`;
  }
}

export function storedKey() {
  return sessionStorage.getItem(KEY);
}

export function storeKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

const listeners = new Set();

/** Called with the error whenever the API answers 401 (the key stopped working). */
export function onUnauthorized(listener) {
  listeners.add(listener);
}

export function query(params) {
  const search = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value === undefined || value === null || value === "") continue;
    for (const item of Array.isArray(value) ? value : [value]) search.append(name, item);
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

export async function request(method, path, { body, key } = {}) {
  const headers = { "x-api-key": key ?? storedKey() ?? "" };
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, "network", "network error");
  }
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new ApiError(response.status, data?.error?.type ?? "http_error", data?.error?.message ?? "",
      data?.error?.fields ?? []);
    if (response.status === 401 && key === undefined) listeners.forEach((listener) => listener(error));
    throw error;
  }
  return data;
}

export const get = (path, params = {}) => request("GET", path + query(params));
export const post = (path, body) => request("POST", path, { body });
export const patch = (path, body) => request("PATCH", path, { body });
