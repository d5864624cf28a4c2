// The operator console in headless Chromium (Debian's, driven by playwright-core), as an
// operator and then a plain user use it. tests/e2e/test_console.py starts the stack and runs
// this script; when a step needs the world to change (a provider to fail) the script asks
// for it on stdout (`{"ask": ...}`) and waits for the test's answer on stdin. The last line
// is `{"result": {...}}`: what the pages showed, for the test to judge. Screenshots of every
// page go to SAGA_SHOTS.
//
// Env: SAGA_CONSOLE (the /console/ URL), SAGA_ADMIN_KEY, SAGA_USER_EMAIL, SAGA_USER_PASSWORD,
// SAGA_SHOTS, SAGA_CHROMIUM.
import { readFile } from "node:fs/promises";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const env = process.env;
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

async function ask(what) {
  process.stdout.write(JSON.stringify({ ask: what }) + "\n");
  const { value } = await lines.next();
  if (value !== "ok") throw new Error(`the test answered ${value} to ${what}`);
}

const result = { console_errors: [], user_admin_calls: [] };
let phase = "admin";
const browser = await chromium.launch({ executablePath: env.SAGA_CHROMIUM, args: ["--no-sandbox"] });
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.setDefaultTimeout(30000);
  // A CSP violation or a script error shows here; the test wants none. (Refusals the pages
  // show, a 403 to a plain user, are logged by Chromium as failed loads: those are expected.)
  page.on("console", (m) => {
    if (m.type() === "error" && !m.text().startsWith("Failed to load resource")) {
      result.console_errors.push(m.text());
    }
  });
  page.on("pageerror", (e) => result.console_errors.push(String(e)));
  // What the plain user's pages ask for: none of the operator routes (their scopes tell).
  page.on("request", (r) => {
    const path = new URL(r.url()).pathname;
    if (phase === "user" && path.startsWith("/v1/admin/")) result.user_admin_calls.push(path);
  });
  // What a selector shows, or null when the page has no such thing (so one missing element
  // is reported with everything else instead of ending the run).
  const maybe = (selector) => page.locator(selector).first().textContent({ timeout: 5000 }).catch(() => null);
  const shot = (name) => page.screenshot({ path: `${env.SAGA_SHOTS}/${name}.png`, fullPage: true });
  const open = async (name) => {
    await page.click(`nav a[href="#/${name}"]`);
    // The hash changes asynchronously: wait for this page's own render to finish.
    await page.waitForSelector(`nav a[href="#/${name}"][aria-current="page"]`);
    await page.waitForSelector('main[aria-busy="false"]');
  };

  await page.goto(env.SAGA_CONSOLE);
  // Keyboard: the first Tab reaches the skip link; the key field has the focus already.
  result.focused_at_start = await page.evaluate(() => document.activeElement?.id);
  await page.fill("#api-key", env.SAGA_ADMIN_KEY);
  await page.keyboard.press("Enter");
  await page.waitForSelector("nav a[href='#/providers']");
  await page.waitForSelector('main[aria-busy="false"]');
  result.storage = await page.evaluate(() => ({ local: localStorage.length, session: sessionStorage.length }));
  // Signing in changes the hash and routes: the page is drawn once, not twice.
  result.overview_headings = await page.locator("main h2").count();
  result.overview_charts = await page.$$eval("main figure", (f) => f.map((x) => [x.querySelector("figcaption").textContent, x.querySelectorAll("rect").length]));
  await shot("overview");
  // Keyboard: the skip link, then Enter, lands in the page without leaving it.
  await page.evaluate(() => document.activeElement?.blur());
  await page.keyboard.press("Tab");
  result.first_tab = await page.evaluate(() => document.activeElement?.textContent);
  await page.keyboard.press("Enter");
  result.after_skip = await page.evaluate(() => [document.activeElement?.id, location.hash]);

  await open("providers");
  result.flaky_before = await page.textContent('[data-provider="flaky"]');
  await ask("fail-flaky");
  await page.click("#check-now");
  await page.waitForFunction(() => !document.querySelector("#check-now")?.disabled);
  result.flaky_after = await page.textContent('[data-provider="flaky"]');
  result.providers_text = await page.textContent("main");
  result.ranking_cheapest = await page.textContent('[data-ranking="CHEAPEST"]');
  await shot("providers");

  await open("overview");
  result.warnings = await page.textContent("#warning-list");
  result.overview_text = await page.textContent("main");

  await open("patterns");
  await page.selectOption("#pattern", "chat");
  await page.fill("#input-prompt", "hello from the console");
  await page.click("#run");
  await page.waitForFunction(() => /completed/.test(document.querySelector("#run-timeline")?.textContent ?? ""));
  result.run_text = await page.textContent("#run-text");
  result.run_timeline = await page.textContent("#run-timeline");
  result.first_input = await page.getAttribute(".fields :is(textarea, input, select)", "id");
  result.patterns_table = await maybe('caption:has-text("Patterns and their inputs") ~ tbody');
  await shot("patterns");

  // A running run, live: the test holds its provider's answer until told to release it.
  await ask("hold-run");
  await open("executions");
  await page.selectOption("#filter-status", "RUNNING");
  await page.click("form.filters button");
  await page.waitForSelector('caption:has-text("Executions") ~ tbody button.link');
  await page.click('caption:has-text("Executions") ~ tbody button.link');
  await page.waitForFunction(() => /started/.test(document.querySelector("#timeline")?.textContent ?? ""));
  result.live_status = await page.textContent("#execution-status");
  result.live_text_before = await page.textContent("#execution-text");
  await shot("execution-live");
  await ask("release-run");
  await page.waitForFunction(() => /completed/.test(document.querySelector("#timeline")?.textContent ?? ""));
  result.live_text_after = await page.textContent("#execution-text");

  await page.selectOption("#filter-status", "any");
  await page.click("form.filters button");
  const first = (await page.textContent("table button.link")).trim();
  await page.click("table button.link");
  await page.waitForFunction(
    (id) =>
      document.querySelector("main section h3")?.textContent === `Execution ${id}` &&
      /completed/.test(document.querySelector("#timeline")?.textContent ?? ""),
    first,
  );
  result.execution_timeline = await page.textContent("#timeline");
  result.admin_runs_notice = await page.textContent("main .notice");
  result.admin_runs_users = await page.$$eval('caption:has-text("Executions") ~ tbody tr td:nth-child(3)', (c) => [...new Set(c.map((x) => x.textContent))]);
  await shot("executions");

  // Paging: one execution a page (the address's page_size), forward through the API's
  // next_page_token to the last page, then one back.
  const runIds = 'caption:has-text("Executions") ~ tbody button.link';
  result.admin_run_ids = await page.$$eval(runIds, (b) => b.map((x) => x.textContent.trim()));
  const onPage = (n) =>
    page.waitForFunction(
      (n) => document.querySelector("#executions-page")?.textContent === `Page ${n}`,
      n,
    );
  await page.evaluate(() => history.replaceState(null, "", `?page_size=1${location.hash}`));
  await page.click("form.filters button");
  await page.waitForFunction(() => document.querySelectorAll("main table tbody button.link").length === 1);
  await onPage(1);
  result.paging_first_has_previous = !(await page.isDisabled("#executions-previous"));
  result.paging_ids = [(await page.textContent(runIds)).trim()];
  while (!(await page.isDisabled("#executions-next")) && result.paging_ids.length < 20) {
    await page.click("#executions-next");
    await onPage(result.paging_ids.length + 1);
    result.paging_ids.push((await page.textContent(runIds)).trim());
  }
  await shot("executions-last-page");
  await page.click("#executions-previous");
  await onPage(result.paging_ids.length - 1);
  result.paging_back = (await page.textContent(runIds)).trim();
  await page.evaluate(() => history.replaceState(null, "", `${location.pathname}${location.hash}`));

  await open("usage");
  await page.selectOption("#usage-by", "user");
  await page.click("form.filters button");
  await page.waitForSelector('caption:has-text("Usage by user")');
  result.admin_usage_notice = await page.textContent("#usage-out .notice");
  result.admin_usage_users = await page.$$eval("#usage-out tbody tr td:first-child", (c) => c.map((x) => x.textContent));
  await shot("usage");
  const [download] = await Promise.all([page.waitForEvent("download"), page.click("#usage-csv")]);
  result.usage_csv_name = download.suggestedFilename();
  result.usage_csv = await readFile(await download.path(), "utf8");

  // An admin publishes a pricing pack from the form and sees it in the list.
  await open("patterns");
  await page.fill("#pack-asof", env.SAGA_PACK_ASOF);
  await page.fill("#pack-source", "test-feed");
  await page.fill("#pack-prices", env.SAGA_PACK_PRICES);
  await page.click('button:has-text("Publish")');
  await page.waitForSelector('.notice:has-text("Published PP_")');
  result.published = await page.textContent('.notice:has-text("Published PP_")');
  result.packs_table = await page.textContent('caption:has-text("Packs") ~ tbody');
  await shot("packs-published");

  await open("keys");
  await page.fill("#key-name", "console-temp");
  await page.fill("#key-scopes", "execute");
  await page.click("text=Create key");
  await page.waitForSelector("#new-key");
  const secret = (await page.textContent("#new-key")).trim();
  result.own_key_state = await maybe('tr:has-text("admin") td:nth-child(6)');
  result.key_shown = secret.startsWith("saga_");
  await shot("keys-created");
  // An admin caps what the key may spend.
  const keyId = await page.getAttribute('tr:has-text("console-temp") button[data-revoke]', "data-revoke");
  await page.fill(`[data-cap="${keyId}"] input`, "1.5");
  await page.click(`[data-cap="${keyId}"] button[type="submit"]`);
  await page.waitForSelector(`[data-cap-of="${keyId}"]:has-text("$1.5000")`).catch(async (e) => {
    throw new Error(`${e.message}\npage: ${await page.textContent("main")}`);
  });
  result.key_cap = await page.textContent(`[data-cap-of="${keyId}"]`);
  await shot("keys-capped");
  await page.click('tr:has-text("console-temp") button[data-revoke]');
  await page.waitForSelector('tr:has-text("console-temp"):has-text("revoked")');
  await shot("keys-revoked");
  // Every user, one a page (the address's page_size), to the last page.
  await page.evaluate(() => history.replaceState(null, "", `?page_size=1${location.hash}`));
  await open("overview");
  await open("keys");
  result.listed_users = [];
  for (let n = 1; n <= 20; n++) {
    await page.waitForSelector(`#users-page:has-text("Page ${n}")`);
    result.listed_users.push((await page.textContent("#users tbody tr td:nth-child(2)")).trim());
    if (await page.isDisabled("#users-next")) break;
    await page.click("#users-next");
  }
  await page.evaluate(() => history.replaceState(null, "", `${location.pathname}${location.hash}`));
  // The plain user's keys, and one of them revoked by the admin.
  await open("overview");
  await open("keys");
  await page.click(`button[data-user-keys="${env.SAGA_USER_ID}"]`);
  await page.waitForSelector('#user-keys caption:has-text("API keys of")');
  result.user_keys_before = await page.innerHTML("#user-keys");
  // Its own rate limits, set by the admin.
  const userKeyId = await page.getAttribute('#user-keys tr:has-text("user-key") button[data-revoke-user-key]', "data-revoke-user-key");
  await page.fill(`#rpm-${userKeyId}`, "7");
  await page.fill(`#conc-${userKeyId}`, "2");
  await page.click(`[data-limits="${userKeyId}"] button[type="submit"]`);
  await page.waitForSelector('#user-keys tr:has-text("user-key"):has-text("7/min")');
  result.user_key_limits = await page.textContent('#user-keys tr:has-text("user-key") td:nth-child(7)');
  await page.click('#user-keys tr:has-text("user-key") button[data-revoke-user-key]');
  await page.waitForSelector('#user-keys tr:has-text("user-key"):has-text("revoked")');
  result.user_keys_after = await page.textContent("#user-keys");
  await shot("keys-users");
  await page.click("#logout");
  result.storage_after_logout = await page.evaluate(() => sessionStorage.length);
  // The revoked key is refused (revocation is felt within 10 s: retry until then).
  for (let i = 0; i < 30; i++) {
    await page.fill("#api-key", secret);
    await page.keyboard.press("Enter");
    const answer = await Promise.race([
      page.waitForSelector(".notice.error").then(() => "refused"),
      page.waitForSelector("nav:not([hidden])").then(() => "accepted"),
    ]);
    if (answer === "refused") {
      result.revoked_refusal = await page.textContent(".notice.error");
      break;
    }
    await page.click("#logout");
    await page.waitForTimeout(500);
  }
  await shot("revoked-key-refused");

  // A plain user, by email and password: their own usage only, no operator pages.
  phase = "user";
  await page.fill("#email", env.SAGA_USER_EMAIL);
  await page.fill("#password", env.SAGA_USER_PASSWORD);
  await page.click("#login-password button");
  await page.waitForSelector("nav:not([hidden])");
  await page.waitForSelector('main[aria-busy="false"]');
  await open("usage");
  await page.selectOption("#usage-by", "user");
  await page.click("form.filters button");
  await page.waitForSelector('caption:has-text("Usage by user")');
  result.user_usage_notice = await page.textContent("#usage-out .notice");
  result.user_usage_users = await page.$$eval("#usage-out tbody tr td:first-child", (c) => c.map((x) => x.textContent));
  await shot("usage-user");
  // Another user's usage is refused to them, by name.
  const other = result.admin_usage_users.find((u) => u !== env.SAGA_USER_ID);
  await page.fill("#usage-user", other);
  await page.click("form.filters button");
  await page.waitForSelector("#usage-out .notice.warn");
  result.user_other_usage = await page.textContent("#usage-out");
  await open("executions");
  await page.waitForSelector('caption:has-text("Executions")');
  result.user_runs_notice = await page.textContent("main .notice");
  result.user_runs_users = await page.$$eval('caption:has-text("Executions") ~ tbody tr td:nth-child(3)', (c) => c.map((x) => x.textContent));
  await shot("executions-user");
  await open("providers");
  result.user_providers = await page.textContent("main");
  await open("patterns");
  result.user_patterns = await page.textContent("main");
  await shot("providers-user");
  await open("keys");
  result.user_keys_page = await page.textContent("main");

  await open("overview");
  result.user_overview = await page.textContent("main");
  // Every page at a phone's width (as the plain user): nothing wider than the screen.
  await page.setViewportSize({ width: 390, height: 844 });
  result.phone_overflow = {};
  for (const name of ["overview", "providers", "usage", "executions", "patterns", "keys"]) {
    await open(name);
    result.phone_overflow[name] = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth);
    await shot(`${name}-phone`);
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify({ result }) + "\n");
process.exit(0);
