// Settings (admins): API tokens for central servers, users, and the
// running configuration.
import { api, getJson, el, time, session } from "./lib.js";

function section(title, ...children) {
  return el("section", { class: "panel settings" }, el("h2", {}, title), ...children);
}

function errorLine() { return el("p", { class: "error", role: "alert" }); }

function tokens() {
  const table = el("table", { id: "tokens" });
  const shown = el("div", { id: "new-token" });
  const error = errorLine();
  const form = el("form", { id: "token-form", class: "filters" },
    el("label", {}, "Name ", el("input", { name: "name", required: true, placeholder: "central-server" })),
    el("label", {}, "Scope ", el("select", { name: "scope" }, el("option", { value: "read" }, "read"), el("option", { value: "admin" }, "admin"))),
    el("button", { type: "submit" }, "Create token"));
  async function load() {
    const list = await getJson("/api/v1/tokens");
    table.replaceChildren(
      el("tr", {}, ...["Id", "Name", "Scope", "Created", "Last used", ""].map((h) => el("th", {}, h))),
      ...list.map((t) => el("tr", { "data-token": t.id },
        ...[t.id, t.name, t.scope, time(t.created), time(t.last_used) || "never"].map((v) => el("td", {}, v)),
        el("td", {}, el("button", { type: "button", onclick: async () => {
          await api("DELETE", `/api/v1/tokens/${t.id}`).catch((e) => { error.textContent = e.message; });
          load();
        } }, "Revoke")))));
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    try {
      const t = await api("POST", "/api/v1/tokens", { name: form.elements.name.value, scope: form.elements.scope.value });
      shown.replaceChildren(el("p", {}, `Token for ${t.name} (${t.scope}). Copy it now: it is not shown again.`),
        el("code", { class: "secret" }, t.token));
      form.reset();
      load();
    } catch (e) { error.textContent = e.message; }
  });
  load().catch((e) => { error.textContent = e.message; });
  return section("API tokens", el("p", { class: "muted" },
    "Central servers send a token as “Authorization: Bearer …”. Read tokens can poll everything; admin tokens can also change settings."),
  form, error, shown, table);
}

function users() {
  const table = el("table", { id: "users" });
  const error = errorLine();
  const form = el("form", { id: "user-form", class: "filters" },
    el("label", {}, "User ", el("input", { name: "name", required: true, autocomplete: "off" })),
    el("label", {}, "Password ", el("input", { name: "password", type: "password", required: true, minlength: 8, autocomplete: "new-password" })),
    el("label", {}, "Scope ", el("select", { name: "scope" }, el("option", { value: "read" }, "read"), el("option", { value: "admin" }, "admin"))),
    el("button", { type: "submit" }, "Save user"));
  async function load() {
    const list = await getJson("/api/v1/users");
    table.replaceChildren(
      el("tr", {}, ...["User", "Scope", "Created", ""].map((h) => el("th", {}, h))),
      ...list.map((u) => el("tr", { "data-user": u.name },
        ...[u.name, u.scope, time(u.created)].map((v) => el("td", {}, v)),
        el("td", {}, el("button", { type: "button", onclick: async () => {
          await api("DELETE", `/api/v1/users/${encodeURIComponent(u.name)}`).catch((e) => { error.textContent = e.message; });
          load();
        } }, "Delete")))));
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    const f = form.elements;
    try {
      await api("PUT", `/api/v1/users/${encodeURIComponent(f.name.value)}`, { password: f.password.value, scope: f.scope.value });
      form.reset();
      load();
    } catch (e) { error.textContent = e.message; }
  });
  load().catch((e) => { error.textContent = e.message; });
  return section("Users", form, error, table);
}

function config() {
  const text = el("textarea", { id: "config", spellcheck: "false", rows: 24 });
  const note = el("p", { class: "muted", role: "status" });
  const error = errorLine();
  const load = () => api("GET", "/api/v1/config").then((t) => { text.value = t; }).catch((e) => { error.textContent = e.message; });
  const save = el("button", { type: "submit" }, "Save and apply");
  const form = el("form", { id: "config-form" }, text, el("div", { class: "filters" }, save, note), error);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    error.textContent = "";
    note.textContent = "";
    try {
      const res = await fetch("/api/v1/config", {
        method: "PUT",
        headers: { "Content-Type": "application/toml", "X-CSRF-Token": session().csrf },
        body: text.value,
      });
      const body = await res.json().catch(() => ({}));
      if (!res.ok) throw new Error(body.error ?? `save failed (${res.status})`);
      note.textContent = "Saved. The pipeline is restarting with it…";
      setTimeout(() => { note.textContent = "Running with the saved configuration."; load(); }, 4000);
    } catch (e) { error.textContent = e.message; }
  });
  load();
  return section("Configuration", el("p", { class: "muted" },
    "Cameras, zones and the model. Credentials show as *** and stay as stored unless you write new ones. " +
    "Saving checks the file, then restarts the pipeline with it; one that does not start is rolled back."), form);
}

export function show(root) {
  root.append(tokens(), users(), config());
}
