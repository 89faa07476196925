// Vigil's browser UI: logs in, then shows one page at a time by the URL's
// hash (#/live, #/events, #/event/ID, #/camera/ID, #/system, #/settings).
// Plain modules, no build step, nothing from the internet.
import { api, session, setSession } from "./lib.js";
import * as live from "./live.js";
import * as events from "./events.js";
import * as camera from "./camera.js";
import * as system from "./system.js";
import * as settings from "./settings.js";

const pages = {
  live: (root) => live.show(root),
  events: (root) => events.show(root),
  event: (root, id) => events.showOne(root, id),
  camera: (root, id) => camera.show(root, id),
  system: (root) => system.show(root),
  settings: (root) => settings.show(root),
};

let leave = null; // the current page's clean-up (timers, streams)

function route() {
  if (leave) leave();
  leave = null;
  const [name, arg] = location.hash.replace(/^#\/?/, "").split("/");
  const page = pages[name] ? name : "live";
  for (const a of document.querySelectorAll("#top nav a")) {
    a.classList.toggle("current", a.getAttribute("href") === `#/${page}`);
  }
  const root = document.getElementById("page");
  root.replaceChildren();
  root.dataset.page = page;
  leave = pages[page](root, arg && decodeURIComponent(arg)) || null;
}

function showApp() {
  document.getElementById("login").hidden = true;
  document.getElementById("app").hidden = false;
  const s = session();
  document.getElementById("whoami").textContent = `${s.name ?? s.kind} (${s.scope})`;
  document.getElementById("nav-settings").hidden = s.scope !== "admin";
  route();
}

function showLogin(message = "") {
  if (leave) leave();
  leave = null;
  document.getElementById("app").hidden = true;
  document.getElementById("login").hidden = false;
  document.getElementById("login-error").textContent = message;
  document.querySelector('#login-form [name="user"]').focus();
}

document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const form = new FormData(ev.target);
  const res = await fetch("/api/v1/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ user: form.get("user"), password: form.get("password") }),
  });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) {
    showLogin(body.error ?? `login failed (${res.status})`);
    return;
  }
  ev.target.reset();
  setSession(body);
  showApp();
});

document.getElementById("logout").addEventListener("click", async () => {
  await api("POST", "/api/v1/logout").catch(() => {});
  setSession(null);
  showLogin();
});

window.addEventListener("hashchange", () => { if (session()) route(); });
// Any request that finds the session gone brings the login back.
window.addEventListener("vigil:unauthorized", () => showLogin("Your session ended; log in again."));

(async () => {
  const res = await fetch("/api/v1/session", { cache: "no-store" });
  if (res.ok) {
    setSession(await res.json());
    showApp();
  } else {
    showLogin();
  }
})();
