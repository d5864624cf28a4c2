// The console's shell: sign-in, navigation (hash routes, so every page is a link and the
// browser's back button works) and sign-out.

import "./style.css";
import { ApiError, call, credential, signIn, signOut, token } from "./api";
import { executions, keys, overview, patterns, providers, usagePage, type Page } from "./pages";
import { allows, PAGE_NEEDS } from "./scopes";
import { el, notice } from "./ui";

const PAGES: [string, string, Page][] = [
  ["overview", "Overview", overview],
  ["providers", "Providers", providers],
  ["usage", "Usage", usagePage],
  ["executions", "Executions", executions],
  ["patterns", "Patterns and packs", patterns],
  ["keys", "Keys", keys],
];

const main = document.getElementById("main") as HTMLElement;
const nav = document.getElementById("nav") as HTMLElement;
const logout = document.getElementById("logout") as HTMLButtonElement;
const skip = document.querySelector<HTMLAnchorElement>("a.skip");

/** The page on screen: a newer route aborts its streams and discards what it still draws,
 * so two quick navigations (or a sign-in, which changes the hash) never draw two pages. */
let current: AbortController | null = null;

function leave(): AbortSignal {
  current?.abort();
  current = new AbortController();
  return current.signal;
}

function login(): void {
  leave();
  nav.hidden = true;
  logout.hidden = true;
  const key = el("input", { id: "api-key", type: "password", autocomplete: "off", required: true });
  const email = el("input", { id: "email", type: "email", autocomplete: "username", required: true });
  const password = el("input", { id: "password", type: "password", autocomplete: "current-password", required: true });
  const status = el("div", { "aria-live": "polite" });
  const byKey = el(
    "form",
    { id: "login-key" },
    el("h3", {}, "With an API key"),
    el("label", { for: "api-key" }, "API key"), key,
    el("button", { type: "submit" }, "Sign in"),
  );
  const byPassword = el(
    "form",
    { id: "login-password" },
    el("h3", {}, "With email and password"),
    el("label", { for: "email" }, "Email"), email,
    el("label", { for: "password" }, "Password"), password,
    el("button", { type: "submit" }, "Sign in"),
  );
  const accept = async (secret: string) => {
    signIn(secret);
    try {
      await credential(); // proves the credential before showing pages
      if (location.hash === "#/overview") void route();
      else location.hash = "#/overview"; // hashchange routes
    } catch (error) {
      signOut();
      const reason = error instanceof ApiError ? error.reason : "";
      status.replaceChildren(notice(`Sign-in refused: ${(error as Error).message} ${reason}`, "error"));
    }
  };
  byKey.addEventListener("submit", (e) => {
    e.preventDefault();
    void accept(key.value.trim());
  });
  byPassword.addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const reply = await call("POST", "/v1/login", { email: email.value, password: password.value });
      password.value = "";
      await accept(reply.access_token);
    } catch (error) {
      const reason = error instanceof ApiError ? error.reason : "";
      status.replaceChildren(notice(`Sign-in refused: ${(error as Error).message} ${reason}`, "error"));
    }
  });
  main.replaceChildren(el("h2", {}, "Sign in"), byKey, byPassword, status);
  key.focus();
}

async function route(): Promise<void> {
  if (!token()) return login();
  nav.hidden = false;
  logout.hidden = false;
  const name = location.hash.replace(/^#\//, "") || "overview";
  const page = PAGES.find(([id]) => id === name) ?? PAGES[0];
  nav.replaceChildren(
    ...PAGES.map(([id, title]) =>
      el("a", { href: `#/${id}`, "aria-current": id === page[0] ? "page" : false }, title),
    ),
  );
  const signal = leave();
  const view = el("div");
  main.replaceChildren(view);
  main.setAttribute("aria-busy", "true");
  try {
    const { scopes } = await credential();
    const needs = PAGE_NEEDS[page[0]];
    if (allows(scopes, needs)) await page[2](view, signal);
    else {
      view.append(
        el("h2", {}, page[1]),
        notice(
          `Your credential's scopes do not allow this page: it needs scope ${needs.join(" or ")} ` +
            `(yours: ${scopes?.join(" ") || "none"}).`,
          "warn",
        ),
      );
    }
  } catch (error) {
    if (signal.aborted) return;
    if (error instanceof ApiError && error.status === 401) {
      signOut();
      return login();
    }
    view.append(notice(`The page failed: ${(error as Error).message}`, "error"));
  } finally {
    if (!signal.aborted) main.setAttribute("aria-busy", "false");
  }
}

logout.addEventListener("click", () => {
  signOut();
  history.replaceState(null, "", location.pathname); // no page in the URL, no hashchange
  login();
});
// The skip link moves the focus to the page; following its href would change the hash,
// which routes.
skip?.addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});
window.addEventListener("hashchange", () => void route());
void route();
