// What one call to the public API sends: the URL with its query, and a RequestInit with the
// bearer header and no cookies (credentials "omit": no CSRF surface). Pure, so Vitest checks
// it, and sends it to a loopback server to see what arrives (console/tests/request.test.ts).

export type Method = "GET" | "POST" | "DELETE";

/** GET and DELETE carry `params` in the query (a list repeats its key; empty strings, false
 * and undefined are left out), POST as a JSON body. */
export function buildRequest(
  method: Method,
  path: string,
  params: Record<string, unknown>,
  token: string | null,
  accept = "application/json",
): { url: string; init: RequestInit } {
  const headers: Record<string, string> = { Accept: accept };
  if (token) headers["Authorization"] = `Bearer ${token}`;
  const init: RequestInit = { method, headers, credentials: "omit" };
  if (method === "POST") {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(params);
    return { url: path, init };
  }
  const query = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (Array.isArray(v)) v.forEach((item) => query.append(k, String(item)));
    else if (v !== undefined && v !== null && v !== "" && v !== false) query.append(k, String(v));
  }
  const q = query.toString();
  return { url: q ? `${path}?${q}` : path, init };
}
