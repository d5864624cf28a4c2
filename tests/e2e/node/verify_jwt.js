#!/usr/bin/env node
// Verifies a Saga access token (a JWT signed with EdDSA/Ed25519) against a JWKS, with
// nothing but Node's built-in `crypto`: what a client in another language does offline.
//
// Input on stdin: JSON {"token": "<JWT>", "jwks": {"keys": [...]}, "iss": "...", "aud": "..."}.
// Output on stdout: one JSON line, {"valid": true, "claims": {...}} or
// {"valid": false, "error": "..."}; the exit code is 0 when valid, 1 when not.
"use strict";

const crypto = require("crypto");

function b64url(part) {
  if (!/^[A-Za-z0-9_-]*$/.test(part)) throw new Error("not base64url");
  return Buffer.from(part, "base64url");
}

function verify({ token, jwks, iss, aud }) {
  const parts = String(token).split(".");
  if (parts.length !== 3) throw new Error("not a compact JWS");
  const header = JSON.parse(b64url(parts[0]).toString("utf8"));
  // Pinned algorithm: never what the token asks for beyond EdDSA.
  if (header.alg !== "EdDSA") throw new Error(`algorithm ${header.alg} not accepted`);
  const jwk = (jwks.keys || []).find((k) => k.kid === header.kid);
  if (!jwk) throw new Error(`no key ${header.kid} in the JWKS`);
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519") throw new Error("not an Ed25519 key");
  const key = crypto.createPublicKey({
    key: { kty: jwk.kty, crv: jwk.crv, x: jwk.x },
    format: "jwk",
  });
  const data = Buffer.from(`${parts[0]}.${parts[1]}`, "ascii");
  if (!crypto.verify(null, data, key, b64url(parts[2]))) throw new Error("bad signature");
  const claims = JSON.parse(b64url(parts[1]).toString("utf8"));
  const now = Date.now() / 1000;
  if (typeof claims.exp !== "number" || claims.exp <= now) throw new Error("expired");
  if (claims.iss !== iss) throw new Error(`issuer ${claims.iss}`);
  const audiences = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
  if (!audiences.includes(aud)) throw new Error(`audience ${claims.aud}`);
  return claims;
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  try {
    const claims = verify(JSON.parse(input));
    process.stdout.write(JSON.stringify({ valid: true, claims }) + "\n");
  } catch (error) {
    process.stdout.write(JSON.stringify({ valid: false, error: error.message }) + "\n");
    process.exitCode = 1;
  }
});
