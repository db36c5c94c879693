// Every request the page makes goes through here (same origin: the gateway). A failed call
// throws ApiError carrying the server's `detail`, which is what the user is shown. Calls the
// server may guard with the admin token (/admin/*, /upload/direct, and /videos except reads)
// carry it.

const TOKEN_KEY = "adminToken";

/** A failed call: HTTP `status` (0 when the network failed), the API's `code` and `detail`. */
export class ApiError extends Error {
  constructor(status, code, detail) {
    super(detail);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }

  /** Network errors, overload and server faults may pass; a 4xx will not change on retry. */
  get retryable() {
    return this.status === 0 || this.status === 408 || this.status === 429 || this.status >= 500;
  }
}

// ---------------------------------------------------------------- admin token

export function adminToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    // No storage for this document: the embed in another site's <iframe>, where browsers
    // block third-party storage. Nothing there needs the admin token.
    return "";
  }
}

export function setAdminToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

const unauthorizedListeners = new Set();

/** Call `listener(error)` whenever the server answers 401 (the token is missing or wrong). */
export function onUnauthorized(listener) {
  unauthorizedListeners.add(listener);
}

function needsToken(method, path) {
  const read = method === "GET" || method === "HEAD";
  return (
    path.startsWith("/admin") ||
    path.startsWith("/upload/direct") ||
    (!read && path.startsWith("/videos"))
  );
}

function headersFor(method, path, body) {
  const headers = { Accept: "application/json" };
  const token = adminToken();
  if (token && needsToken(method, path)) headers.Authorization = `Bearer ${token}`;
  if (typeof body === "string") headers["Content-Type"] = "application/json";
  return headers;
}

// ---------------------------------------------------------------- calls

/** The ApiError for a failed response, its message taken from the body's `detail`. */
export function errorFrom(status, statusText, text) {
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const detail = body && body.detail ? String(body.detail) : `${status} ${statusText}`.trim();
  return new ApiError(status, body && body.error ? String(body.error) : "", detail);
}

/** fetch + JSON (a string body is sent as JSON); throws ApiError (with the server's `detail`)
 * on any failure. */
export async function api(method, path, body = undefined, { signal, retried = false } = {}) {
  let response;
  const sentToken = adminToken();
  try {
    const headers = headersFor(method, path, body);
    response = await fetch(path, { method, body, signal, headers });
  } catch (err) {
    throw new ApiError(0, "network", `Network error (${err.message}): check the connection.`);
  }
  const text = await response.text();
  if (!response.ok) {
    const error = errorFrom(response.status, response.statusText, text);
    // Only where the admin token is what is missing: asking for it elsewhere would not help.
    if (error.status === 401 && needsToken(method, path)) {
      // A call sent before the operator saved a token is refused for the token it carried,
      // not for the new one: try it once more with that (a 401 comes before the server does
      // anything), instead of asking for the token that was just given.
      if (adminToken() !== sentToken && !retried) {
        return api(method, path, body, { signal, retried: true });
      }
      for (const listener of unauthorizedListeners) listener(error);
    }
    throw error;
  }
  return text ? JSON.parse(text) : null;
}

/** A FormData from a plain object; Blob values are sent as files. */
export function formData(fields) {
  const form = new FormData();
  for (const [name, value] of Object.entries(fields)) {
    if (value instanceof Blob) form.append(name, value, "blob");
    else form.append(name, String(value));
  }
  return form;
}

/**
 * POST `body` (a Blob sent as it is, with `contentType`) with XMLHttpRequest, which (unlike
 * fetch) reports upload progress. `onProgress(bytesSent)` follows the body; aborting `signal`
 * cancels the request. A raw body costs the server no multipart parsing: the page's chunks go
 * this way, the fields in the query string.
 */
export function postWithProgress(path, body, { contentType, onProgress, signal }) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    const abort = () => xhr.abort();
    const settle = () => signal.removeEventListener("abort", abort);
    xhr.open("POST", path);
    xhr.setRequestHeader("Accept", "application/json");
    if (contentType) xhr.setRequestHeader("Content-Type", contentType);
    xhr.upload.onprogress = (event) => onProgress(event.loaded);
    xhr.onload = () => {
      settle();
      if (xhr.status >= 200 && xhr.status < 300) resolve(JSON.parse(xhr.responseText || "null"));
      else reject(errorFrom(xhr.status, xhr.statusText, xhr.responseText));
    };
    xhr.onerror = () => {
      settle();
      reject(new ApiError(0, "network", "Network error while sending: check the connection."));
    };
    xhr.onabort = () => {
      settle();
      reject(new ApiError(-1, "aborted", "cancelled"));
    };
    if (signal.aborted) {
      reject(new ApiError(-1, "aborted", "cancelled"));
      return;
    }
    signal.addEventListener("abort", abort);
    xhr.send(body);
  });
}
