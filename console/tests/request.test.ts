import { createServer, type IncomingHttpHeaders } from "node:http";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { buildRequest } from "../src/request";

describe("buildRequest", () => {
  test("a GET carries its params in the query: lists repeat, empty and false ones are left out", () => {
    const { url, init } = buildRequest(
      "GET",
      "/v1/usage",
      { group_by: ["USAGE_DIMENSION_DAY", "USAGE_DIMENSION_USER"], user_id: "", all_users: false, page_size: 50, x: undefined },
      "tok",
    );
    expect(url).toBe("/v1/usage?group_by=USAGE_DIMENSION_DAY&group_by=USAGE_DIMENSION_USER&page_size=50");
    expect(init.body).toBeUndefined();
    expect(init.method).toBe("GET");
  });

  test("a POST carries its params as a JSON body, the path untouched", () => {
    const { url, init } = buildRequest("POST", "/v1/execute", { pattern_id: "chat", inputs: { prompt: "a&b" } }, "tok");
    expect(url).toBe("/v1/execute");
    expect(JSON.parse(init.body as string)).toEqual({ pattern_id: "chat", inputs: { prompt: "a&b" } });
    expect((init.headers as Record<string, string>)["Content-Type"]).toBe("application/json");
  });

  test("every request has the bearer header and sends no cookies; none before sign-in", () => {
    const signedIn = buildRequest("DELETE", "/v1/api-keys/key_1", {}, "saga_ak_secret");
    expect((signedIn.init.headers as Record<string, string>).Authorization).toBe("Bearer saga_ak_secret");
    expect(signedIn.init.credentials).toBe("omit");
    const anonymous = buildRequest("POST", "/v1/login", { email: "a@b" }, null);
    expect(anonymous.init.headers).not.toHaveProperty("Authorization");
  });
});

describe("what a loopback server receives", () => {
  const seen: { method?: string; url?: string; headers: IncomingHttpHeaders; body: string }[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      seen.push({ method: req.method, url: req.url, headers: req.headers, body });
      res.setHeader("Content-Type", "application/json");
      res.end("{}");
    });
  });
  let base = "";
  beforeAll(async () => {
    await new Promise<void>((ready) => server.listen(0, "127.0.0.1", ready));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((done) => server.close(() => done())));

  test("the bearer header, the query and the body arrive as built", async () => {
    for (const [method, params] of [
      ["GET", { status: "EXECUTION_STATUS_FAILED", all_users: true }],
      ["POST", { name: "ci" }],
    ] as const) {
      const { url, init } = buildRequest(method, `${base}/v1/x`, params, "tok-1");
      expect((await fetch(url, init)).status).toBe(200);
    }
    expect(seen.map((s) => [s.method, s.url, s.headers.authorization, s.headers.cookie, s.body])).toEqual([
      ["GET", "/v1/x?status=EXECUTION_STATUS_FAILED&all_users=true", "Bearer tok-1", undefined, ""],
      ["POST", "/v1/x", "Bearer tok-1", undefined, '{"name":"ci"}'],
    ]);
  });
});
