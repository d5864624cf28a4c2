// The console's shell: sign-in, navigation (hash routes, so every page is a link and the
// browser's back button works) and sign-out.

import "./style.css";
import { ApiError, call, signIn, signOut, token } from "./api";
import { executions, keys, overview, patterns, providers, usagePage, type Page } from "./pages";
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

function login(): void {
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
  const accept = async (credential: string) => {
    signIn(credential);
    try {
      await call("GET", "/v1/api-keys"); // proves the credential before showing pages
      location.hash = "#/overview";
      void route();
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
  main.replaceChildren();
  main.setAttribute("aria-busy", "true");
  try {
    await page[2](main);
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) {
      signOut();
      return login();
    }
    main.append(notice(`The page failed: ${(error as Error).message}`, "error"));
  } finally {
    main.setAttribute("aria-busy", "false");
  }
}

logout.addEventListener("click", () => {
  signOut();
  location.hash = "";
  login();
});
window.addEventListener("hashchange", () => void route());
void route();
