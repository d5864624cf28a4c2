// What the signed-in credential may do, to decide what a page shows. Read, never verified:
// the gateway decides what is allowed (a page still shows its 403s); this only spares a
// plain user the pages and calls that would be refused. Pure: console/tests/scopes.test.ts.

export interface ListedKey {
  prefix: string;
  scopes: string[];
  revoked_at?: string | null;
}

/** A JWT's claims (its middle part, base64url JSON); null when `token` is not a JWT. */
export function jwtClaims(token: string): Record<string, unknown> | null {
  const parts = token.split(".");
  if (parts.length !== 3) return null;
  try {
    const b64 = parts[1].replace(/-/g, "+").replace(/_/g, "/");
    const text = new TextDecoder().decode(Uint8Array.from(atob(b64), (c) => c.charCodeAt(0)));
    const claims = JSON.parse(text);
    return claims && typeof claims === "object" ? claims : null;
  } catch {
    return null;
  }
}

/** The listed key this API key is (the one active key whose display prefix starts it);
 * null when none or more than one match. */
export function ownKey<K extends ListedKey>(credential: string, keys: K[]): K | null {
  const found = keys.filter((k) => !k.revoked_at && k.prefix && credential.startsWith(k.prefix));
  return found.length === 1 ? found[0] : null;
}

/** The credential's scopes: a session token's `scope` claim (space-separated), or its API
 * key's listed scopes; null when they cannot be told (then pages ask and show refusals). */
export function scopesOf(credential: string, keys: ListedKey[]): string[] | null {
  const claims = jwtClaims(credential);
  if (claims) return typeof claims.scope === "string" ? claims.scope.split(" ").filter(Boolean) : null;
  return ownKey(credential, keys)?.scopes ?? null;
}

/** What each page needs: any one of these scopes (none listed: any credential). As the
 * gateway checks them (services/gateway: usage.py, execution.py, relay.py, patterns.py). */
export const PAGE_NEEDS: Record<string, string[]> = {
  overview: ["usage:read", "usage:read:all"],
  providers: ["admin"],
  usage: ["usage:read", "usage:read:all"],
  executions: ["execute", "usage:read:all", "admin"],
  patterns: [],
  keys: [],
};

/** Whether `scopes` include one of `needs`; unknown scopes (null) allow, so the gateway
 * answers. */
export function allows(scopes: string[] | null, needs: string[]): boolean {
  return scopes === null || needs.length === 0 || needs.some((s) => scopes.includes(s));
}
