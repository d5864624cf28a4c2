// The console's pages. Each asks the public API for what it shows; a 403 is shown as what
// the caller's scopes do not allow, never hidden as an empty page.

import { ApiError, call, credential, stream, type Json, type StreamEvent } from "./api";
import { type Cell, csv } from "./csv";
import { Pages } from "./paging";
import { daily, day, short, usd, when } from "./format";
import { bars, el, notice, table } from "./ui";

/** Draws a page into `root`; `signal` aborts when another page (or the sign-in) replaces
 * it, ending its streams. */
export type Page = (root: HTMLElement, signal: AbortSignal) => Promise<void>;

function failure(error: unknown, what: string): HTMLElement {
  if (error instanceof ApiError && error.denied) {
    return notice(`Your credential's scopes do not allow ${what} (${error.reason}).`, "warn");
  }
  const reason = error instanceof ApiError ? ` (${error.reason})` : "";
  return notice(`Could not load ${what}: ${(error as Error).message}${reason}`, "error");
}

/** Whether the credential has scope `admin`: from its scopes when the console can tell
 * them, else by asking an operator route (a 403 means no). */
async function isAdmin(): Promise<boolean> {
  const { scopes } = await credential();
  if (scopes) return scopes.includes("admin");
  try {
    await call("GET", "/v1/admin/vault");
    return true;
  } catch (error) {
    if (error instanceof ApiError && error.denied) return false;
    throw error;
  }
}

/** Everyone's rows when the scopes allow it (`usage:read:all`), else the caller's own: an
 * admin sees all, a user their own, from the same page. */
async function everyoneOrOwn(path: string, params: Record<string, unknown>): Promise<{ reply: Json; everyone: boolean }> {
  try {
    return { reply: await call("GET", path, { ...params, all_users: true }), everyone: true };
  } catch (error) {
    if (!(error instanceof ApiError && error.denied)) throw error;
    return { reply: await call("GET", path, params), everyone: false };
  }
}

/** One user's rows when asked for (scope `usage:read:all`), else everyoneOrOwn. */
async function scoped(path: string, params: Record<string, unknown>, user: string): Promise<{ reply: Json; everyone: boolean }> {
  if (user) return { reply: await call("GET", path, { ...params, user_id: user }), everyone: false };
  return everyoneOrOwn(path, params);
}

function usage(params: Record<string, unknown>): Promise<{ reply: Json; everyone: boolean }> {
  return everyoneOrOwn("/v1/usage", params);
}

function tokensOf(row: Json): number {
  return Number(row.input_tokens) + Number(row.output_tokens);
}

// --- Overview ---------------------------------------------------------------------------

/** How many runs of `listed` (newest first, one page of a list) were created since `day`:
 * exact when the page reaches back past it, else a lower bound ("500+"). */
function countSince(listed: Json, since: string): string {
  const runs: Json[] = listed.executions;
  const n = runs.filter((x) => x.created_at.slice(0, 10) >= since).length;
  const oldest = runs.length ? runs[runs.length - 1].created_at.slice(0, 10) : "";
  return listed.next_page_token && oldest >= since ? `${n}+` : String(n);
}

export const overview: Page = async (root) => {
  root.append(el("h2", {}, "Overview"));
  const warnings = el("section", { "aria-labelledby": "warnings-h" }, el("h3", { id: "warnings-h" }, "Warnings"));
  root.append(warnings);
  const first = day(29);
  const today = day(0);
  try {
    const { reply, everyone } = await usage({ start_date: first, end_date: today, group_by: ["USAGE_DIMENSION_DAY"] });
    const failed = await call("GET", "/v1/executions", {
      status: "EXECUTION_STATUS_FAILED",
      created_after: `${first}T00:00:00Z`,
      page_size: 500,
      all_users: everyone,
    });
    const rows: Json[] = reply.rows;
    const sum = (since: string, f: (r: Json) => number) =>
      rows.filter((r) => r.day >= since).reduce((a, r) => a + f(r), 0);
    const periods: [string, string][] = [["Today", today], ["7 days", day(6)], ["30 days", first]];
    const per = (f: (r: Json) => number) => daily(rows, first, today, f);
    const failedRuns = failed.executions.map((x: Json) => ({ day: x.created_at.slice(0, 10) }));
    root.append(
      notice(everyone ? "Usage of every user." : "Your own usage (your scopes do not include usage:read:all)."),
      table(
        "Calls, failed runs, tokens and cost",
        ["Period", "Calls", "Failed runs", "Tokens", "Cost"],
        periods.map(([name, since]) => [
          name,
          String(sum(since, (r) => Number(r.calls))),
          el("span", { "data-failed": name }, countSince(failed, since)),
          String(sum(since, tokensOf)),
          usd(sum(since, (r) => Number(r.cost_micro_usd))),
        ]),
      ),
      el(
        "div",
        { class: "charts" },
        bars("Calls per day", per((r) => Number(r.calls))),
        bars("Failed runs per day", daily(failedRuns, first, today, () => 1)),
        bars("Tokens per day", per(tokensOf)),
        bars("Cost per day", per((r) => Number(r.cost_micro_usd)), usd),
      ),
    );
  } catch (error) {
    root.append(failure(error, "usage"));
  }
  const found: string[] = [];
  if (await isAdmin()) {
    try {
      const providers = await call("GET", "/v1/admin/providers");
      for (const p of providers.providers) {
        if (p.circuit_state !== "CIRCUIT_STATE_CLOSED") found.push(`Provider ${p.name}: circuit ${short(p.circuit_state)}`);
        else if (!p.healthy) found.push(`Provider ${p.name} is failing its probes`);
      }
      const vault = await call("GET", "/v1/admin/vault");
      if (vault.status.state !== "VAULT_STATE_SERVING") {
        found.push(`Vault ${short(vault.status.state)} ${vault.status.sealed_reason}`);
      }
    } catch (error) {
      warnings.append(failure(error, "provider and vault state"));
    }
  } else {
    warnings.append(notice("Provider and vault warnings need scope admin."));
  }
  try {
    // The newest pack is the one runs read: anything but FRESH is worth a look. An older
    // one only when its reconciliation failed (older packs go stale by design).
    const packs = await call("GET", "/v1/packs", { page_size: 5 });
    packs.packs.forEach((p: Json, i: number) => {
      if (i === 0 ? p.status !== "PACK_STATUS_FRESH" : p.status === "PACK_STATUS_ERROR") {
        const ready = p.status === "PACK_STATUS_WARMING" ? `, ready about ${when(p.estimated_ready)}` : "";
        found.push(`Pack ${p.pack_id || p.asof}: ${short(p.status)}${ready}`);
      }
    });
  } catch (error) {
    warnings.append(failure(error, "pack health"));
  }
  warnings.append(
    found.length ? el("ul", { id: "warning-list" }, ...found.map((w) => el("li", {}, w))) : notice("No warnings."),
  );
};

// --- Providers --------------------------------------------------------------------------

const STRATEGIES = ["CHEAPEST", "FASTEST", "QUALITY", "BALANCED", "RELIABLE"];

export const providers: Page = async (root) => {
  root.append(el("h2", {}, "Providers"));
  const checks = new Map<string, Json>();
  const holder = el("div");
  const check = el("button", { type: "button", id: "check-now" }, "Check now");
  root.append(check, holder);
  const draw = async () => {
    const [reply, live] = await Promise.all([
      call("GET", "/v1/admin/providers"),
      call("GET", "/v1/admin/providers/metrics"),
    ]);
    const rankings = await Promise.all(
      STRATEGIES.map((s) => call("POST", "/v1/admin/providers/rank", { strategy: `STRATEGY_${s}` })),
    );
    const metrics = new Map<string, Json>(live.metrics.map((m: Json) => [m.provider, m]));
    holder.replaceChildren(
      table(
        "Configured providers",
        ["Name", "Kind / model", "Circuit", "Health", "Price in/out per Mtok", "Limits", "Last check"],
        reply.providers.map((p: Json) => {
          const c = checks.get(p.name);
          return [
            p.name,
            `${p.kind} / ${p.model}`,
            el("span", { class: `circuit ${short(p.circuit_state).toLowerCase()}`, "data-provider": p.name }, short(p.circuit_state)),
            p.healthy ? "healthy" : "failing",
            `${usd(p.prices.input_per_million_micro_usd)} / ${usd(p.prices.output_per_million_micro_usd)}`,
            `rpm ${p.limits.rpm || "∞"}, tpm ${p.limits.tpm || "∞"}, concurrency ${p.limits.max_concurrency || "∞"}`,
            c ? (c.ok ? `ok, ${c.latency_ms} ms` : `failed: ${c.error_reason}`) : "—",
          ];
        }),
      ),
      table(
        "Live metrics (priors until there are samples)",
        ["Provider", "Latency p50 / p99", "TTFT p50 / p99", "Success rate", "Quality", "Samples"],
        live.metrics.map((m: Json) => [
          m.provider,
          `${m.p50_latency_ms} / ${m.p99_latency_ms} ms`,
          `${m.p50_ttft_ms} / ${m.p99_ttft_ms} ms`,
          `${(Number(m.success_rate) * 100).toFixed(1)} %`,
          Number(m.quality).toFixed(2),
          String(m.samples),
        ]),
      ),
      table(
        "Ranking per strategy, best first",
        ["Strategy", "Ranked", "Excluded"],
        rankings.map((r: Json, i: number) => [
          STRATEGIES[i].toLowerCase(),
          el("span", { "data-ranking": STRATEGIES[i] }, r.ranked.map((p: Json) => `${p.provider} (${Number(p.score).toFixed(2)})`).join(", ") || "—"),
          r.excluded.map((x: Json) => `${x.provider}: ${short(x.reason)}`).join(", ") || "—",
        ]),
      ),
      notice(
        `Usage outbox: ${reply.outbox.backlog} waiting, ${reply.outbox.dead_letters} dead letters.` +
          (metrics.size ? "" : " No live metrics yet."),
      ),
    );
  };
  check.addEventListener("click", async () => {
    check.disabled = true;
    try {
      const reply = await call("POST", "/v1/admin/providers/check", {});
      for (const r of reply.results) checks.set(r.provider, r);
      await draw();
    } catch (error) {
      holder.prepend(failure(error, "a provider check"));
    } finally {
      check.disabled = false;
    }
  });
  try {
    await draw();
  } catch (error) {
    check.hidden = true;
    holder.append(failure(error, "the providers (scope admin)"));
  }
};

// --- Usage ------------------------------------------------------------------------------

const DIMENSIONS: Record<string, string> = {
  day: "USAGE_DIMENSION_DAY",
  provider: "USAGE_DIMENSION_PROVIDER",
  model: "USAGE_DIMENSION_MODEL",
  user: "USAGE_DIMENSION_USER",
};

export const usagePage: Page = async (root) => {
  root.append(el("h2", {}, "Usage"));
  const start = el("input", { type: "date", id: "usage-start", value: day(29) });
  const end = el("input", { type: "date", id: "usage-end", value: day(0) });
  const by = el("select", { id: "usage-by" }, ...Object.keys(DIMENSIONS).map((k) => el("option", { value: k }, k)));
  const who = el("input", { id: "usage-user", placeholder: "user id (scope usage:read:all)" });
  const form = el(
    "form",
    { class: "filters" },
    el("label", { for: "usage-start" }, "From"), start,
    el("label", { for: "usage-end" }, "To"), end,
    el("label", { for: "usage-by" }, "By"), by,
    el("label", { for: "usage-user" }, "User"), who,
    el("button", { type: "submit" }, "Show"),
  );
  const out = el("div", { id: "usage-out" });
  root.append(form, out);
  let file = "";
  const draw = async () => {
    const dim = by.value;
    out.replaceChildren(notice("Loading usage…"));
    try {
      const user = who.value.trim();
      const query = { start_date: start.value, end_date: end.value, group_by: [DIMENSIONS[dim]] };
      const { reply, everyone } = await scoped("/v1/usage", query, user);
      const head = [dim, "Calls", "Input tokens", "Output tokens", "Cost (USD)"];
      // The counts stay numbers for the CSV: only text cells get the formula guard (csv.ts).
      const cells: Cell[][] = reply.rows.map((r: Json) => [
        String(r[dim === "user" ? "user_id" : dim]),
        Number(r.calls),
        Number(r.input_tokens),
        Number(r.output_tokens),
        (Number(r.cost_micro_usd) / 1e6).toFixed(6),
      ]);
      const rows = cells.map((r) => r.map(String));
      if (file) URL.revokeObjectURL(file); // the previous table's download
      file = URL.createObjectURL(new Blob([csv([head, ...cells])], { type: "text/csv" }));
      out.replaceChildren(
        notice(
          user
            ? `Usage of ${user}.`
            : everyone
              ? "Every user's usage."
              : "Your own usage only (scope usage:read:all shows everyone's).",
        ),
        bars(`Tokens by ${dim}`, reply.rows.map((r: Json, i: number) => [rows[i][0], tokensOf(r)])),
        table(`Usage by ${dim}`, head, rows),
        el("a", { href: file, download: `saga-usage-${dim}-${start.value}-${end.value}.csv`, id: "usage-csv" }, "Download CSV"),
      );
    } catch (error) {
      out.replaceChildren(failure(error, "usage"));
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void draw();
  });
  await draw();
};

// --- Executions -------------------------------------------------------------------------

function describeEvent(e: StreamEvent): string {
  const d = e.data[e.event] ?? e.data;
  switch (e.event) {
    case "accepted":
      return `accepted, pack ${d.pricing_pack_id || "—"}`;
    case "step_started":
      return `step ${d.step_id} started`;
    case "provider_switched":
      return `provider ${d.from_provider || "—"} → ${d.to_provider} (${d.reason || "first"})`;
    case "step_completed":
      return `step ${d.step_id} completed by ${d.provider || "—"}`;
    case "completed":
      return `completed, cost ${usd(d.cost_micro_usd ?? 0)}`;
    case "error":
      return `error ${d.error?.reason ?? ""}: ${d.error?.message ?? ""}`;
    default:
      return e.event;
  }
}

/** Follows a run's events, writing tokens to `text` and the rest to `timeline`. */
async function follow(
  method: "GET" | "POST",
  path: string,
  body: Record<string, unknown> | null,
  timeline: HTMLElement,
  text: HTMLElement,
  signal?: AbortSignal,
): Promise<void> {
  const onEvent = (e: StreamEvent) => {
    if (e.event === "token") text.textContent += (e.data.token ?? e.data).text;
    else timeline.append(el("li", {}, `#${e.id || "—"} ${describeEvent(e)}`));
  };
  try {
    await stream(method, path, body, onEvent, signal);
  } catch (error) {
    if (!signal?.aborted) throw error;
  }
}

let watching: AbortController | null = null;
/** The execution being watched: showing another one, or leaving the page, stops its stream. */
function watch(page: AbortSignal): AbortSignal {
  watching?.abort();
  watching = new AbortController();
  return AbortSignal.any([page, watching.signal]);
}

async function showExecution(id: string, into: HTMLElement, page: AbortSignal): Promise<void> {
  const signal = watch(page);
  into.replaceChildren(notice(`Loading execution ${id}…`));
  const { execution: x } = await call("GET", `/v1/executions/${encodeURIComponent(id)}`);
  const timeline = el("ol", { id: "timeline" });
  const text = el("pre", { id: "execution-text", "aria-live": "polite" });
  into.replaceChildren(
    el("h3", {}, `Execution ${x.execution_id}`),
    el(
      "dl",
      {},
      el("dt", {}, "Pattern"), el("dd", {}, x.pattern_id),
      el("dt", {}, "Status"), el("dd", { id: "execution-status" }, short(x.status)),
      el("dt", {}, "User"), el("dd", {}, x.user_id),
      el("dt", {}, "Tokens"), el("dd", {}, `${x.usage?.input_tokens ?? 0} in, ${x.usage?.output_tokens ?? 0} out`),
      el("dt", {}, "Cost"), el("dd", {}, usd(x.cost_micro_usd)),
      el("dt", {}, "Error"), el("dd", {}, x.error_reason || "—"),
    ),
    notice(x.status === "EXECUTION_STATUS_RUNNING" ? "Running: events arrive live." : "Timeline:"),
    timeline,
    text,
  );
  await follow("GET", `/v1/executions/${encodeURIComponent(id)}/events`, null, timeline, text, signal);
}

export const executions: Page = async (root, signal) => {
  root.append(el("h2", {}, "Executions"));
  const status = el(
    "select",
    { id: "filter-status" },
    ...["", "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "INTERRUPTED"].map((s) => el("option", { value: s }, s || "any")),
  );
  const pattern = el("input", { id: "filter-pattern", placeholder: "chat" });
  const user = el("input", { id: "filter-user", placeholder: "user id (scope usage:read:all)" });
  const form = el(
    "form",
    { class: "filters" },
    el("label", { for: "filter-status" }, "Status"), status,
    el("label", { for: "filter-pattern" }, "Pattern"), pattern,
    el("label", { for: "filter-user" }, "User"), user,
    el("button", { type: "submit" }, "Filter"),
  );
  const list = el("div");
  const detail = el("section", { "aria-live": "polite" });
  const pages = new Pages();
  const { nav: pager, shown } = pagerFor("executions", "Executions pages", pages, () => void draw());
  root.append(form, list, pager, detail);
  const draw = async () => {
    list.replaceChildren(notice("Loading executions…"));
    shown(false);
    try {
      const filters = {
        status: status.value ? `EXECUTION_STATUS_${status.value}` : "",
        pattern_id: pattern.value,
        page_size: pageSize(),
      };
      const { reply, everyone } = await scoped("/v1/executions", pages.params(filters), user.value.trim());
      pages.answered(reply.next_page_token);
      shown(true);
      list.replaceChildren(
        notice(
          user.value.trim()
            ? `Runs of ${user.value.trim()}.`
            : everyone
              ? "Every user's runs."
              : "Your own runs (scope usage:read:all shows everyone's).",
        ),
        table(
          "Executions, newest first",
          ["Id", "Pattern", "User", "Status", "Created", "Cost"],
          reply.executions.map((x: Json) => {
            const open = el("button", { type: "button", class: "link" }, x.execution_id);
            open.addEventListener("click", () => void showExecution(x.execution_id, detail, signal).catch((e) => detail.replaceChildren(failure(e, "the execution"))));
            return [open, x.pattern_id, x.user_id, short(x.status), when(x.created_at), usd(x.cost_micro_usd)];
          }),
        ),
      );
    } catch (error) {
      list.replaceChildren(failure(error, "executions"));
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    pages.reset(); // new filters: the old pages' tokens do not apply
    void draw();
  });
  await draw();
};

/** Previous/Next buttons (ids `<name>-previous`, `<name>-next`, `<name>-page`) over `pages`;
 * `shown(true)` once a page is answered enables what can be followed, `shown(false)` while
 * one loads disables both. */
function pagerFor(name: string, label: string, pages: Pages, redraw: () => void): { nav: HTMLElement; shown: (answered: boolean) => void } {
  const previous = el("button", { type: "button", id: `${name}-previous` }, "Previous page");
  const next = el("button", { type: "button", id: `${name}-next` }, "Next page");
  const where = el("span", { id: `${name}-page`, "aria-live": "polite" });
  previous.addEventListener("click", () => {
    pages.previous();
    redraw();
  });
  next.addEventListener("click", () => {
    pages.next();
    redraw();
  });
  const shown = (answered: boolean) => {
    previous.disabled = !answered || !pages.hasPrevious;
    next.disabled = !answered || !pages.hasNext;
    if (answered) where.textContent = `Page ${pages.number}`;
  };
  return { nav: el("nav", { class: "pager", "aria-label": label }, previous, where, next), shown };
}

/** Rows per page of a paged list (executions, users): 50, or the `page_size` of the
 * console's address (1–500, the APIs' bound), for a person who wants more at once, and for
 * the browser test. */
function pageSize(): number {
  const asked = Number(new URLSearchParams(location.search).get("page_size"));
  return Number.isInteger(asked) && asked >= 1 && asked <= 500 ? asked : 50;
}

/** An admin's view of every user (AdminService.ListUsers), a page at a time, and of one
 * user's keys, any of which the admin may revoke. */
async function users(root: HTMLElement, report: HTMLElement): Promise<void> {
  const list = el("div", { id: "users" });
  const theirs = el("section", { id: "user-keys", "aria-live": "polite" });
  const pages = new Pages();
  const { nav, shown } = pagerFor("users", "Users pages", pages, () => void draw());
  root.append(el("h2", {}, "Users"), list, nav, theirs);
  const draw = async (): Promise<void> => {
    shown(false);
    try {
      const reply = await call("GET", "/v1/admin/users", pages.params({ page_size: pageSize() }));
      pages.answered(reply.next_page_token);
      shown(true);
      list.replaceChildren(
        table(
          "Every user, oldest first",
          ["Email", "User id", "Scopes", "Created", "Live keys", ""],
          (reply.users ?? []).map((u: Json) => {
            const who = u.email || u.user_id;
            const open = el("button", { type: "button", "data-user-keys": u.user_id, "aria-label": `Keys of ${who}` }, "Keys");
            open.addEventListener("click", () => void userKeys(u.user_id, who, theirs, report, draw));
            return [u.email || "(first admin: key only)", u.user_id, (u.scopes ?? []).join(" "), when(u.created_at), String(u.live_api_keys ?? 0), open];
          }),
        ),
      );
    } catch (error) {
      list.replaceChildren(failure(error, "users"));
    }
  };
  await draw();
}

/** A key's own rate limits (zeros: the deployment's per-user defaults). */
function rates(limits: Json | undefined): string {
  const perMinute = Number(limits?.requests_per_minute ?? 0);
  const atOnce = Number(limits?.concurrent_executions ?? 0);
  if (!perMinute && !atOnce) return "defaults";
  return [perMinute ? `${perMinute}/min` : "default/min", atOnce ? `${atOnce} at once` : "default at once"].join(", ");
}

/** An admin's controls for one key's own rate limits (AdminService.SetApiKeyLimits; empty
 * or 0 = the default). */
function limitsForm(key: Json, done: () => Promise<void>, report: HTMLElement): HTMLElement {
  const keyId: string = key.key_id;
  const field = (name: string, label: string, max: number, value: unknown) => {
    const id = `${name}-${keyId}`;
    const input = el("input", { id, type: "number", min: "0", max: String(max), step: "1", size: "5", value: String(value ?? "") });
    return { input, label: el("label", { for: id }, label) };
  };
  const perMinute = field("rpm", "Per minute", 1_000_000, key.limits?.requests_per_minute || "");
  const atOnce = field("conc", "At once", 10_000, key.limits?.concurrent_executions || "");
  const form = el("form", { class: "filters", "data-limits": keyId }, perMinute.label, perMinute.input, atOnce.label, atOnce.input, el("button", { type: "submit" }, "Set"));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      await call("POST", `/v1/admin/api-keys/${encodeURIComponent(keyId)}/limits`, {
        requests_per_minute: Number(perMinute.input.value || 0),
        concurrent_executions: Number(atOnce.input.value || 0),
      });
      await done();
    } catch (error) {
      report.replaceChildren(failure(error, "setting the limits"));
    }
  });
  return form;
}

/** One user's keys for an admin (AdminService.ListUserApiKeys): each revocable, with its
 * own rate limits to set. */
async function userKeys(userId: string, who: string, into: HTMLElement, report: HTMLElement, changed: () => Promise<void>): Promise<void> {
  const path = `/v1/admin/users/${encodeURIComponent(userId)}/api-keys`;
  try {
    const reply = await call("GET", path);
    into.replaceChildren(
      table(
        `API keys of ${who}, newest first`,
        ["Name", "Prefix", "Scopes", "Created", "Last used", "State", "Rate limits", "Set limits", ""],
        (reply.keys ?? []).map((k: Json) => {
          const revoke = el("button", { type: "button", "data-revoke-user-key": k.key_id, "aria-label": `Revoke ${k.name} of ${who}` }, "Revoke");
          revoke.hidden = Boolean(k.revoked_at);
          revoke.addEventListener("click", async () => {
            try {
              await call("DELETE", `${path}/${encodeURIComponent(k.key_id)}`);
              await Promise.all([userKeys(userId, who, into, report, changed), changed()]);
            } catch (error) {
              report.replaceChildren(failure(error, "revoking the key"));
            }
          });
          const state = k.revoked_at ? `revoked ${when(k.revoked_at)}` : "active";
          const redraw = () => userKeys(userId, who, into, report, changed);
          const limits = k.revoked_at ? "" : limitsForm(k, redraw, report);
          return [k.name, k.prefix, (k.scopes ?? []).join(" "), when(k.created_at), when(k.last_used_at), state, rates(k.limits), limits, revoke];
        }),
      ),
    );
  } catch (error) {
    into.replaceChildren(failure(error, `the keys of ${who}`));
  }
}

// --- Patterns and packs -----------------------------------------------------------------

/** A pattern's inputs from its JSON schema, the required ones first (then as declared). */
function inputsOf(pattern: Json): [string, Json, boolean][] {
  const props: Record<string, Json> = pattern?.input_schema?.properties ?? {};
  const required: string[] = pattern?.input_schema?.required ?? [];
  const all = Object.entries(props).map(([name, schema]): [string, Json, boolean] => [name, schema, required.includes(name)]);
  return [...all.filter((i) => i[2]), ...all.filter((i) => !i[2])];
}

export const patterns: Page = async (root, signal) => {
  root.append(el("h2", {}, "Patterns and packs"));
  const runner = el("section", { "aria-labelledby": "run-h" }, el("h3", { id: "run-h" }, "Run a pattern"));
  root.append(runner);
  try {
    const reply = await call("GET", "/v1/patterns");
    const choose = el("select", { id: "pattern" }, ...reply.patterns.map((p: Json) => el("option", { value: p.pattern_id }, p.pattern_id)));
    const fields = el("div", { class: "fields" });
    const timeline = el("ol", { id: "run-timeline" });
    const text = el("pre", { id: "run-text", "aria-live": "polite" });
    const go = el("button", { type: "submit", id: "run" }, "Run");
    const form = el("form", {}, el("label", { for: "pattern" }, "Pattern"), choose, fields, go);
    const byId = new Map<string, Json>(reply.patterns.map((p: Json) => [p.pattern_id, p]));
    const inputs = () => {
      const p = byId.get(choose.value);
      fields.replaceChildren(
        el("p", {}, p?.description ?? ""),
        ...inputsOf(p).map(([name, schema, required]) => {
          const id = `input-${name}`;
          const input = schema.enum
            ? el("select", { id, name, required }, ...["", ...schema.enum].map((v: string) => el("option", { value: v }, v || "—")))
            : schema.type === "string"
              ? el("textarea", { id, name, rows: "2", required })
              : el("input", { id, name, required, placeholder: `JSON ${schema.type ?? ""}` });
          const label = `${name}${required ? " (required)" : ""}${schema.description ? ` — ${schema.description}` : ""}`;
          return el("div", { class: "field" }, el("label", { for: id }, label), input);
        }),
      );
    };
    choose.addEventListener("change", inputs);
    if (byId.has("chat")) choose.value = "chat";
    inputs();
    form.addEventListener("submit", async (e) => {
      e.preventDefault();
      const props: Record<string, Json> = byId.get(choose.value)?.input_schema?.properties ?? {};
      const values: Record<string, unknown> = {};
      for (const [name, schema] of Object.entries(props)) {
        const input = fields.querySelector<HTMLInputElement | HTMLTextAreaElement | HTMLSelectElement>(`[name="${name}"]`);
        if (!input || input.value === "") continue;
        try {
          values[name] = schema.type === "string" ? input.value : JSON.parse(input.value);
        } catch {
          timeline.replaceChildren(el("li", {}, `${name}: not JSON`));
          return;
        }
      }
      timeline.replaceChildren();
      text.textContent = "";
      go.disabled = true;
      try {
        await follow("POST", "/v1/execute", { pattern_id: choose.value, inputs: values }, timeline, text, signal);
      } catch (error) {
        timeline.append(el("li", {}, failure(error, "the run")));
      } finally {
        go.disabled = false;
      }
    });
    runner.append(form, el("h4", {}, "Events"), timeline, el("h4", {}, "Text"), text);
    root.append(
      table(
        "Patterns and their inputs",
        ["Pattern", "Description", "Inputs (* required)"],
        reply.patterns.map((p: Json) => [
          p.pattern_id,
          p.description ?? "",
          inputsOf(p).map(([name, , required]) => `${name}${required ? "*" : ""}`).join(", ") || "—",
        ]),
      ),
    );
  } catch (error) {
    runner.append(failure(error, "patterns (scope execute)"));
  }

  const packs = el("section", { "aria-labelledby": "packs-h" }, el("h3", { id: "packs-h" }, "Pricing packs"));
  root.append(packs);
  const list = el("div");
  packs.append(list);
  const draw = async () => {
    try {
      const reply = await call("GET", "/v1/packs", { page_size: 50 });
      list.replaceChildren(
        table(
          "Packs, newest asof first",
          ["Pack", "As of", "Status", "Estimated ready", "Source", "Published"],
          reply.packs.map((p: Json) => [p.pack_id, p.asof, short(p.status), when(p.estimated_ready), p.source, when(p.published_at)]),
        ),
      );
    } catch (error) {
      list.replaceChildren(failure(error, "packs"));
    }
  };
  await draw();
  const asof = el("input", { type: "date", id: "pack-asof", value: day(0), required: true });
  const source = el("input", { id: "pack-source", required: true });
  const prices = el("textarea", { id: "pack-prices", rows: "4", placeholder: '[{"symbol": "AAPL", "price_micro": "229870000", "currency": "USD"}]' });
  const result = el("div", { "aria-live": "polite" });
  const publish = el(
    "form",
    {},
    el("h4", {}, "Publish a pack (scope admin)"),
    el("label", { for: "pack-asof" }, "As of"), asof,
    el("label", { for: "pack-source" }, "Source"), source,
    el("label", { for: "pack-prices" }, "Prices (JSON list)"), prices,
    el("button", { type: "submit" }, "Publish"),
    result,
  );
  publish.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const reply = await call("POST", "/v1/admin/packs", {
        asof: asof.value,
        source: source.value,
        prices: JSON.parse(prices.value || "[]"),
      });
      result.replaceChildren(notice(`Published ${reply.pack_id}: ${short(reply.health.status)}`));
      await draw();
    } catch (error) {
      result.replaceChildren(error instanceof SyntaxError ? notice("Prices are not JSON.", "error") : failure(error, "publishing"));
    }
  });
  if (await isAdmin()) packs.append(publish);
  else packs.append(notice("Publishing a pack needs scope admin."));
};

// --- Keys -------------------------------------------------------------------------------

function cap(b: Json | undefined): string {
  if (!b || Number(b.budget_micro_usd) < 0) return "no cap";
  return `${usd(b.budget_micro_usd)} a ${b.period_kind}, ${usd(b.spent_micro_usd)} spent`;
}

/** An admin's controls to cap (or uncap) spend through one key (AdminService.SetBudget). */
function capForm(userId: string, key: Json, done: () => Promise<void>, report: HTMLElement): HTMLElement {
  const keyId: string = key.key_id;
  const id = `cap-${keyId}`;
  const amount = el("input", { id, type: "number", min: "0", step: "0.01", inputmode: "decimal", size: "6" });
  const set = el("button", { type: "submit" }, "Cap");
  const clear = el("button", { type: "button" }, "Uncap");
  const form = el("form", { class: "filters", "data-cap": keyId }, el("label", { for: id }, `Cap ${key.name}, USD`), amount, set, clear);
  const send = async (body: Record<string, unknown>) => {
    try {
      await call("POST", "/v1/admin/budgets", { user_id: userId, key_id: keyId, ...body });
      await done();
    } catch (error) {
      report.replaceChildren(failure(error, "setting the cap"));
    }
  };
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    void send({ amount_micro_usd: String(Math.round(Number(amount.value) * 1_000_000)) });
  });
  clear.addEventListener("click", () => void send({ clear: true }));
  return form;
}

export const keys: Page = async (root) => {
  root.append(el("h2", {}, "API keys"));
  const name = el("input", { id: "key-name", required: true });
  const scopes = el("input", { id: "key-scopes", placeholder: "execute usage:read (empty: all of yours)" });
  const shown = el("div", { "aria-live": "polite" });
  const create = el(
    "form",
    { class: "filters" },
    el("label", { for: "key-name" }, "Name"), name,
    el("label", { for: "key-scopes" }, "Scopes"), scopes,
    el("button", { type: "submit" }, "Create key"),
  );
  const report = el("div", { "aria-live": "polite" });
  const list = el("div");
  root.append(create, shown, report, list);
  const admin = await isAdmin();
  const { keyId: own } = await credential();
  const draw = async () => {
    try {
      const [reply, budget] = await Promise.all([
        call("GET", "/v1/api-keys"),
        call("GET", "/v1/usage/budget").catch((error) => {
          report.replaceChildren(failure(error, "budgets"));
          return null;
        }),
      ]);
      const caps = new Map<string, Json>((budget?.keys ?? []).map((b: Json) => [b.key_id, b]));
      const head = ["Name", "Prefix", "Scopes", "Created", "Last used", "State", "Spend cap", ""];
      if (admin && budget) head.push("Set cap");
      list.replaceChildren(
        budget ? el("p", { id: "your-budget" }, `Your budget: ${cap(budget.user)}.`) : "",
        table(
          "Your API keys, newest first",
          head,
          reply.keys.map((k: Json) => {
            const revoke = el("button", { type: "button", "data-revoke": k.key_id, "aria-label": `Revoke ${k.name}` }, "Revoke");
            revoke.hidden = Boolean(k.revoked_at);
            revoke.addEventListener("click", async () => {
              // Revoking the key this console signed in with ends the session at once.
              if (k.key_id === own && !confirm("This is the key you signed in with: revoke it and be signed out?")) return;
              try {
                await call("DELETE", `/v1/api-keys/${encodeURIComponent(k.key_id)}`);
                await draw();
              } catch (error) {
                report.replaceChildren(failure(error, "revoking the key"));
              }
            });
            const row: (string | Node)[] = [
              k.name,
              k.prefix,
              k.scopes.join(" "),
              when(k.created_at),
              when(k.last_used_at),
              k.revoked_at ? `revoked ${when(k.revoked_at)}` : k.key_id === own ? "active (this session)" : "active",
              el("span", { "data-cap-of": k.key_id }, cap(caps.get(k.key_id))),
              revoke,
            ];
            if (admin && budget) row.push(k.revoked_at ? "" : capForm(budget.user.user_id, k, draw, report));
            return row;
          }),
        ),
        notice(admin ? "As an admin you can cap what each key may spend." : "An admin can cap what each key may spend."),
      );
    } catch (error) {
      list.replaceChildren(failure(error, "your keys"));
    }
  };
  if (admin) await users(root, report);
  else root.append(notice("Listing every user and their keys needs scope admin."));
  create.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const reply = await call("POST", "/v1/api-keys", {
        name: name.value,
        scopes: scopes.value.split(/\s+/).filter(Boolean),
      });
      shown.replaceChildren(
        notice("Copy this key now: it is shown only once.", "warn"),
        el("output", { id: "new-key" }, reply.api_key),
      );
      await draw();
    } catch (error) {
      shown.replaceChildren(failure(error, "creating a key"));
    }
  });
  await draw();
};
