import { describe, expect, test } from "vitest";
import { allows, jwtClaims, ownKey, PAGE_NEEDS, scopesOf } from "../src/scopes";

function jwt(claims: object): string {
  const part = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${part({ alg: "EdDSA" })}.${part(claims)}.c2ln`;
}

const KEYS = [
  { key_id: "key_a", prefix: "saga_ak_AAAA", scopes: ["execute", "admin"], revoked_at: null },
  { key_id: "key_b", prefix: "saga_ak_BBBB", scopes: ["execute"], revoked_at: null },
  { key_id: "key_old", prefix: "saga_ak_BBBB", scopes: ["admin"], revoked_at: "2026-12-01T00:00:00Z" },
];

describe("scopes", () => {
  test("a session token's scopes are its space-separated scope claim", () => {
    expect(scopesOf(jwt({ sub: "usr_1", scope: "execute usage:read" }), KEYS)).toEqual(["execute", "usage:read"]);
    expect(scopesOf(jwt({ sub: "usr_1" }), KEYS)).toBeNull();
    expect(jwtClaims("saga_ak_AAAA.x")).toBeNull();
    expect(jwtClaims("a.%%%.c")).toBeNull();
  });

  test("an API key's scopes are those of the one active listed key it starts with", () => {
    expect(ownKey("saga_ak_BBBBrest", KEYS)?.key_id).toBe("key_b"); // the revoked one does not count
    expect(scopesOf("saga_ak_AAAArest", KEYS)).toEqual(["execute", "admin"]);
    expect(scopesOf("saga_ak_CCCCrest", KEYS)).toBeNull();
    const twins = [...KEYS, { key_id: "key_c", prefix: "saga_ak_AAAA", scopes: [], revoked_at: null }];
    expect(ownKey("saga_ak_AAAArest", twins)).toBeNull(); // cannot tell which: unknown
  });

  test("a page shows when a scope it needs is held, or the scopes are unknown", () => {
    expect(allows(["execute", "usage:read"], PAGE_NEEDS.providers)).toBe(false);
    expect(allows(["admin"], PAGE_NEEDS.providers)).toBe(true);
    expect(allows(["execute"], PAGE_NEEDS.usage)).toBe(false);
    expect(allows(["usage:read:all"], PAGE_NEEDS.usage)).toBe(true);
    expect(allows([], PAGE_NEEDS.keys)).toBe(true);
    expect(allows(null, PAGE_NEEDS.providers)).toBe(true);
  });
});
