// The console's only way to the gateway: the public HTTP API, with the bearer header on
// every request. The token lives in sessionStorage (gone with the tab), never localStorage,
// and never in a cookie, so there is no CSRF surface.

import { buildRequest, type Method } from "./request";
import { ownKey, scopesOf, type ListedKey } from "./scopes";
import { EventSplitter, type Json, type StreamEvent } from "./sse";

export type { Json, StreamEvent };

const TOKEN_KEY = "saga.console.token";

export function token(): string | null {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function signIn(value: string): void {
  sessionStorage.setItem(TOKEN_KEY, value);
  known = null;
}

export function signOut(): void {
  sessionStorage.removeItem(TOKEN_KEY);
  known = null;
}

/** Who is signed in, as far as the console can tell: the credential's scopes (null when
 * unknown) and, for an API key, its listed key_id. */
export interface Credential {
  scopes: string[] | null;
  keyId: string | null;
}

let known: Promise<Credential> | null = null;

/** The signed-in credential (asked once per sign-in: ListApiKeys, which every credential
 * may call, proves it and names its key). */
export function credential(): Promise<Credential> {
  known ??= call("GET", "/v1/api-keys").then(
    (reply) => {
      const t = token() ?? "";
      const keys: (ListedKey & { key_id: string })[] = reply.keys;
      return { scopes: scopesOf(t, keys), keyId: ownKey(t, keys)?.key_id ?? null };
    },
    (error) => {
      known = null; // asked again next time
      throw error;
    },
  );
  return known;
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

/** One JSON call. GET and DELETE take `query`, POST takes `body` (request.ts). */
export async function call(method: Method, path: string, params: Record<string, unknown> = {}): Promise<Json> {
  const { url, init } = buildRequest(method, path, params, token());
  const response = await fetch(url, init);
  if (!response.ok) throw await refusal(response);
  return response.json();
}

/** Follows a Server-Sent Events answer, event by event, until it ends (sse.ts). */
export async function stream(
  method: "GET" | "POST",
  path: string,
  body: Record<string, unknown> | null,
  onEvent: (e: StreamEvent) => void,
  signal?: AbortSignal,
): Promise<void> {
  const { url, init } = buildRequest(method, path, body ?? {}, token(), "text/event-stream");
  const response = await fetch(url, { ...init, signal });
  if (!response.ok || !response.body) throw await refusal(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const events = new EventSplitter();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    for (const e of events.push(value)) onEvent(e);
  }
}
