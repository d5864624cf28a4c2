// The console's only way to the gateway: the public HTTP API, with the bearer header on
// every request. The token lives in sessionStorage (gone with the tab), never localStorage,
// and never in a cookie, so there is no CSRF surface.

const TOKEN_KEY = "saga.console.token";

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signIn(value: string): void {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** A refusal of the API, with the gateway's error reason (docs/errors.md). */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly reason: string,
    message: string,
  ) {
    super(message);
  }

  get denied(): boolean {
    return this.status === 403;
  }
}

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { ...extra };
  const t = token();
  if (t) h["Authorization"] = `Bearer ${t}`;
  return h;
}

async function refusal(response: Response): Promise<ApiError> {
  let reason = "";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    reason = body?.error?.reason ?? "";
    message = body?.error?.message ?? message;
  } catch {
    // not JSON: the status line says it
  }
  return new ApiError(response.status, reason, message);
}

export type Json = any; // eslint-disable-line @typescript-eslint/no-explicit-any

/** One JSON call. GET and DELETE take `query`, POST takes `body`. */
export async function call(
  method: "GET" | "POST" | "DELETE",
  path: string,
  params: Record<string, unknown> = {},
): Promise<Json> {
  let url = path;
  const init: RequestInit = { method, headers: headers(), credentials: "omit" };
  if (method === "POST") {
    init.body = JSON.stringify(params);
    init.headers = headers({ "Content-Type": "application/json" });
  } else {
    const query = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) {
      if (Array.isArray(v)) v.forEach((item) => query.append(k, String(item)));
      else if (v !== undefined && v !== "" && v !== false) query.append(k, String(v));
    }
    const q = query.toString();
    if (q) url += `?${q}`;
  }
  const response = await fetch(url, init);
  if (!response.ok) throw await refusal(response);
  return response.json();
}

export interface StreamEvent {
  event: string;
  id: string;
  data: Json;
}

/** Parses a Server-Sent Events body as it arrives. EventSource cannot send an
 * Authorization header, so the stream is read from fetch(). */
export async function stream(
  method: "GET" | "POST",
  path: string,
  body: unknown,
  onEvent: (e: StreamEvent) => void,
  signal?: AbortSignal,
): Promise<void> {
  const init: RequestInit = {
    method,
    headers: headers({ Accept: "text/event-stream", "Content-Type": "application/json" }),
    credentials: "omit",
    signal,
  };
  if (method === "POST") init.body = JSON.stringify(body);
  const response = await fetch(path, init);
  if (!response.ok || !response.body) throw await refusal(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut: number;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const parsed = parseBlock(block);
      if (parsed) onEvent(parsed);
    }
  }
}

export function parseBlock(block: string): StreamEvent | null {
  let event = "message";
  let id = "";
  const data: string[] = [];
  for (const line of block.split("\n")) {
    if (line.startsWith(":")) continue; // heartbeat
    if (line.startsWith("event: ")) event = line.slice(7);
    else if (line.startsWith("id: ")) id = line.slice(4);
    else if (line.startsWith("data: ")) data.push(line.slice(6));
  }
  if (!data.length) return null;
  return { event, id, data: JSON.parse(data.join("\n")) };
}
