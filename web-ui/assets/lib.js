// Shared by the pages: the API client (with the CSRF header on changes),
// element building and formatting.
const SVG_NS = "http://www.w3.org/2000/svg";
const SVG_TAGS = new Set(["svg", "rect", "text", "g", "polygon", "polyline", "line", "path"]);

let current = null; // {kind, name, scope, csrf}

export function session() { return current; }
export function setSession(s) { current = s; }

/// Calls the API; JSON in and out. Throws an Error with the server's message.
export async function api(method, url, body) {
  const headers = {};
  if (method !== "GET" && current?.csrf) headers["X-CSRF-Token"] = current.csrf;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(url, {
    method, headers, cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) {
    window.dispatchEvent(new Event("vigil:unauthorized"));
  }
  const type = res.headers.get("content-type") ?? "";
  const data = res.status === 204 ? null
    : type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) throw new Error(data?.error ?? `${url}: ${res.status}`);
  return data;
}

export const getJson = (url) => api("GET", url);

export function el(tag, attrs = {}, ...children) {
  const node = SVG_TAGS.has(tag) ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== undefined && c !== null) node.append(c);
  return node;
}

export function time(iso) { return iso ? iso.replace("T", " ").slice(0, 19) : ""; }
export const pct = (v) => `${(v * 100).toFixed(0)}%`;
export function bytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/// Draws detection boxes (source pixels) over a frame of width × height.
export function drawBoxes(svg, snap) {
  svg.setAttribute("viewBox", `0 0 ${snap.width} ${snap.height}`);
  svg.replaceChildren();
  for (const d of snap.detections) {
    const [x0, y0, x1, y1] = d.box;
    const g = el("g", { class: "detection", "data-label": d.label });
    g.append(el("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0 }));
    const track = d.track === undefined ? "" : ` #${d.track}`;
    const label = `${d.label}${track} ${pct(d.score)}`;
    g.append(el("rect", { class: "tag", x: x0, y: Math.max(0, y0 - 16), width: label.length * 7 + 6, height: 16 }));
    g.append(el("text", { x: x0 + 3, y: Math.max(12, y0 - 4) }, label));
    svg.append(g);
  }
}

/// One event as a card linking to its page.
export function eventCard(e) {
  const li = el("li", { class: "event", "data-event": e.id, "data-label": e.label });
  const link = el("a", { href: `#/event/${e.id}` });
  // A snapshot replaced by a better one is gone until the event's update
  // arrives with the new link: show nothing rather than a broken picture.
  if (e.snapshot) {
    link.append(el("img", { src: e.snapshot, alt: `${e.label} on ${e.camera}`, loading: "lazy",
      onerror: (ev) => { ev.target.hidden = true; } }));
  }
  const end = e.end_time ? `–${e.end_time.slice(11, 19)}` : " · in view";
  link.append(
    el("div", {}, el("strong", {}, `${e.label} #${e.track_id}`), " ", el("span", { class: "muted" }, e.camera)),
    el("div", { class: e.end_time ? "muted" : "open" }, `${time(e.start_time)}${end}`),
  );
  if (e.zones.length) link.append(el("div", { class: "muted" }, e.zones.join(", ")));
  li.append(link);
  return li;
}
