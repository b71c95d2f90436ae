// Calls to this server: JSON requests, the error body, and the server-sent events of /predict/stream.
// The API key lives only in this module's memory (never in storage) and goes out as `Authorization: Bearer`.

let apiKey = "";

export function setApiKey(key) {
  apiKey = key.trim();
}

/** An answer with status >= 400: the service's error body, plus Retry-After when the server sent one. */
export class ApiError extends Error {
  constructor(status, body, retryAfter) {
    const message = (body && body.error) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.errorType = (body && body.error_type) || "http_error";
    this.retryAfter = retryAfter;
  }

  /** One line for people: what happened and what they can do. */
  describe() {
    const hints = {
      401: "This server needs an API key: enter it at the top of the page.",
      429: `The model's queue is full${this.retryAfter ? `; retry in ${this.retryAfter} s` : ""}.`,
      503: "The server is not ready (loading, draining, or the model is not loaded).",
      504: "The request took longer than the server's timeout.",
    };
    const hint = hints[this.status] ? ` ${hints[this.status]}` : "";
    return `${this.status} ${this.errorType}: ${this.message}.${hint}`;
  }
}

function headers(json) {
  const out = {};
  if (json) out["Content-Type"] = "application/json";
  if (apiKey) out.Authorization = `Bearer ${apiKey}`;
  return out;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = { error: response.statusText || "no error body", error_type: "http_error" };
  }
  return new ApiError(response.status, body, response.headers.get("Retry-After"));
}

/** GET or POST `path`; resolves to the decoded JSON, rejects with ApiError (or a network TypeError). */
export async function api(path, body) {
  const init = body === undefined ? { headers: headers(false) }
    : { method: "POST", headers: headers(true), body: JSON.stringify(body) };
  const response = await fetch(path, init);
  if (!response.ok) throw await failure(response);
  return response.json();
}

/** GET a binary file (a report figure) with the key; resolves to a Blob. */
export async function blob(path) {
  const response = await fetch(path, { headers: headers(false) });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

/**
 * POST /predict/stream: calls onToken(text) per `token` event and resolves to the `done` event's body
 * (the full /predict response). An `error` event rejects with ApiError (status from its error_type).
 */
export async function stream(body, onToken) {
  const response = await fetch("/predict/stream", { method: "POST", headers: headers(true),
                                                    body: JSON.stringify(body) });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer = (buffer + decoder.decode(value, { stream: true })).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = parseEvent(buffer.slice(0, end));
      buffer = buffer.slice(end + 2);
      if (event.name === "token") onToken(event.data.text);
      else if (event.name === "done") return event.data;
      else if (event.name === "error") {
        const status = { timeout: 504, queue_full: 429, inference_error: 500 }[event.data.error_type] || 500;
        throw new ApiError(status, event.data, null);
      }
    }
  }
  throw new ApiError(502, { error: "the stream ended without a result", error_type: "stream_cut" }, null);
}

function parseEvent(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
  }
  return { name, data: data.length ? JSON.parse(data.join("\n")) : null };
}
