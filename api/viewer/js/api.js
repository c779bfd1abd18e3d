// A small client of the public cxr-xai API: exactly the calls a hospital frontend would make.
// Auth: `Authorization: Bearer <key>` when a key is set. Errors: RFC 9457 problem+json,
// surfaced as ApiProblem with the stable `code` and the Retry-After seconds.

const KEY_STORAGE = "cxr.apiKey";

export class ApiProblem extends Error {
  constructor({ status = 0, code = "network_error", detail = "", requestId = "", retryAfterS = null }) {
    super(code);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.requestId = requestId;
    this.retryAfterS = retryAfterS;
  }
}

function retryAfter(value) {
  if (!value) return null;
  const seconds = Number.parseInt(value, 10);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isFinite(date) ? Math.max(0, Math.round((date - Date.now()) / 1000)) : null;
}

function problemFrom(status, bodyText, headers) {
  let body = {};
  try {
    body = JSON.parse(bodyText);
  } catch {
    body = {};
  }
  const code = typeof body.code === "string" ? body.code : `http_${status}`;
  return new ApiProblem({
    status,
    code,
    detail: typeof body.detail === "string" ? body.detail : "",
    requestId: headers.get("x-request-id") ?? (typeof body.request_id === "string" ? body.request_id : ""),
    retryAfterS: retryAfter(headers.get("retry-after")),
  });
}

// XMLHttpRequest's headers behind the same get() as fetch's Headers.
function xhrHeaders(xhr) {
  return { get: (name) => xhr.getResponseHeader(name) };
}

export class ApiClient {
  constructor(baseUrl = "..") {
    // The viewer lives at /viewer/: the API is one level up (relative, so a path prefix in
    // front of the service keeps working).
    this.base = new URL(`${baseUrl}/`, document.baseURI);
  }

  get key() {
    return sessionStorage.getItem(KEY_STORAGE) ?? "";
  }

  set key(value) {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  }

  url(path, params = {}) {
    const url = new URL(path.replace(/^\//, ""), this.base);
    for (const [name, value] of Object.entries(params)) url.searchParams.set(name, String(value));
    return url;
  }

  headers() {
    return this.key ? { Authorization: `Bearer ${this.key}` } : {};
  }

  async request(method, path, { params = {}, body = null, signal = null } = {}) {
    let response;
    try {
      response = await fetch(this.url(path, params), {
        method, body, signal, headers: this.headers(), cache: "no-store", credentials: "omit",
      });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiProblem({});
    }
    if (!response.ok) throw problemFrom(response.status, await response.text(), response.headers);
    return response;
  }

  async getJson(path, options = {}) {
    return (await this.request("GET", path, options)).json();
  }

  async deleteJson(path, options = {}) {
    return (await this.request("DELETE", path, options)).json();
  }

  async postFile(path, file, { params = {}, signal = null } = {}) {
    const form = new FormData();
    form.append("file", file);
    return this.request("POST", path, { params, body: form, signal });
  }

  // Multipart upload with progress events (fetch cannot report upload progress).
  // responseType: "json" or "blob". Resolves with {body, headers}.
  upload(path, file, { params = {}, onProgress = null, responseType = "json", signal = null } = {}) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", this.url(path, params));
      for (const [name, value] of Object.entries(this.headers())) xhr.setRequestHeader(name, value);
      xhr.responseType = responseType === "blob" ? "blob" : "text";
      if (onProgress) {
        xhr.upload.addEventListener("progress", (event) => {
          if (event.lengthComputable) onProgress(event.loaded, event.total);
        });
      }
      xhr.addEventListener("load", async () => {
        const headers = xhrHeaders(xhr);
        if (xhr.status >= 200 && xhr.status < 300) {
          try {
            resolve({ body: responseType === "blob" ? xhr.response : JSON.parse(xhr.response), headers });
          } catch {
            reject(new ApiProblem({ status: xhr.status, code: "bad_response" }));
          }
          return;
        }
        const text = responseType === "blob" ? await xhr.response.text() : xhr.response;
        reject(problemFrom(xhr.status, text, headers));
      });
      xhr.addEventListener("error", () => reject(new ApiProblem({})));
      xhr.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
      signal?.addEventListener("abort", () => xhr.abort());
      const form = new FormData();
      form.append("file", file);
      xhr.send(form);
    });
  }
}

// Server-sent events from a fetch response body: yields {event, data} with data parsed as JSON.
export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value.replace(/\r\n/g, "\n");
    let cut = buffer.indexOf("\n\n");
    while (cut >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const parsed = parseBlock(block);
      if (parsed) yield parsed;
      cut = buffer.indexOf("\n\n");
    }
  }
}

function parseBlock(block) {
  let event = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) event = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  if (data.length === 0) return null;
  try {
    return { event, data: JSON.parse(data.join("\n")) };
  } catch {
    return null;
  }
}

// Runs `call` again after a 503's Retry-After (at most `attempts` times), telling `onWait`.
export async function withRetry(call, onWait, attempts = 3) {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await call();
    } catch (error) {
      const retryable = error instanceof ApiProblem && error.status === 503 && error.retryAfterS !== null;
      if (!retryable || attempt >= attempts) throw error;
      const seconds = Math.min(Math.max(error.retryAfterS, 1), 30);
      onWait?.(error, seconds);
      await new Promise((resolve) => setTimeout(resolve, seconds * 1000));
    }
  }
}

// Base64 (as the JSON endpoints send images) to a Blob, without a data: URL.
export function base64Blob(b64, type = "image/png") {
  const raw = atob(b64);
  const bytes = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i += 1) bytes[i] = raw.charCodeAt(i);
  return new Blob([bytes], { type });
}
