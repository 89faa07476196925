// Vigil live view: polls the REST API, shows each camera's latest analysed
// frame with its boxes and track ids, the newest events (kept current by the
// server-sent event feed) and the newest detections.
"use strict";

const POLL_MS = 500;
const SVG_NS = "http://www.w3.org/2000/svg";
const cards = new Map(); // camera id -> {root, img, svg, state, seq}

async function getJson(url) {
  const res = await fetch(url, { cache: "no-store" });
  if (!res.ok) throw new Error(`${url}: ${res.status}`);
  return res.json();
}

function el(tag, attrs = {}, text) {
  const node = tag === "svg" || ["rect", "text", "g"].includes(tag)
    ? document.createElementNS(SVG_NS, tag) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

function card(cam) {
  let c = cards.get(cam.id);
  if (c) return c;
  const root = el("article", { class: "camera", "data-camera": cam.id });
  const head = el("header");
  head.append(el("h3", {}, cam.id));
  const state = el("span", { class: "muted" });
  head.append(state);
  const view = el("div", { class: "view" });
  const img = el("img", { alt: `latest frame of ${cam.id}` });
  const svg = el("svg", { preserveAspectRatio: "none" });
  const placeholder = el("div", { class: "placeholder" }, "waiting for the first frame…");
  view.append(placeholder);
  root.append(head, view);
  document.getElementById("cameras").append(root);
  c = { root, view, img, svg, state, placeholder, seq: -1 };
  cards.set(cam.id, c);
  return c;
}

function drawBoxes(c, snap) {
  c.svg.setAttribute("viewBox", `0 0 ${snap.width} ${snap.height}`);
  c.svg.replaceChildren();
  for (const d of snap.detections) {
    const [x0, y0, x1, y1] = d.box;
    const g = el("g", { class: "detection", "data-label": d.label });
    g.append(el("rect", { x: x0, y: y0, width: x1 - x0, height: y1 - y0 }));
    const track = d.track === undefined ? "" : ` #${d.track}`;
    const label = `${d.label}${track} ${(d.score * 100).toFixed(0)}%`;
    g.append(el("rect", { class: "tag", x: x0, y: Math.max(0, y0 - 16), width: label.length * 7 + 6, height: 16 }));
    g.append(el("text", { x: x0 + 3, y: Math.max(12, y0 - 4) }, label));
    c.svg.append(g);
  }
}

async function refreshCamera(cam) {
  const c = card(cam);
  const i = cam.ingest;
  c.state.textContent = `${i.state} · ${i.decoder ?? "…"} · ${i.input_fps} fps in · ${i.frames_sampled} sampled · ${i.frames_dropped} dropped`;
  let snap;
  try {
    snap = await getJson(`/api/v1/cameras/${encodeURIComponent(cam.id)}/snapshot`);
  } catch { return; }
  if (snap.seq === c.seq) return;
  // Load the picture of exactly this frame, then draw its boxes over it.
  const src = `/api/v1/cameras/${encodeURIComponent(cam.id)}/snapshot.jpg?seq=${snap.seq}`;
  const next = new Image();
  next.onload = () => {
    c.img.src = next.src;
    if (c.placeholder.isConnected) c.placeholder.replaceWith(c.img, c.svg);
    drawBoxes(c, snap);
    c.seq = snap.seq;
  };
  next.src = src;
}

async function refreshDetections() {
  const data = await getJson("/api/v1/detections?limit=15");
  const rows = data.detections.slice().reverse().map((d) => {
    const tr = el("tr");
    const box = d.box.map((v) => v.toFixed(0)).join(", ");
    for (const v of [d.frame_time.slice(11, 23), d.camera, d.label, d.score.toFixed(2), box]) {
      tr.append(el("td", {}, v));
    }
    return tr;
  });
  document.querySelector("#detections tbody").replaceChildren(...rows);
}

const EVENTS_SHOWN = 24;
const events = new Map(); // event id -> latest state

function eventItem(e) {
  const li = el("li", { class: "event", "data-event": e.id, "data-label": e.label });
  if (e.snapshot) li.append(el("img", { src: e.snapshot, alt: `${e.label} on ${e.camera}`, loading: "lazy" }));
  const start = e.start_time.slice(11, 19);
  const end = e.end_time ? `–${e.end_time.slice(11, 19)}` : "";
  const info = el("div");
  info.append(el("strong", {}, `${e.label} #${e.track_id}`), " ", el("span", { class: "muted" }, e.camera));
  const when = el("div", { class: e.end_time ? "muted" : "open" }, `${start}${end}${e.end_time ? "" : " · in view"}`);
  li.append(info, when);
  if (e.zones.length) li.append(el("div", { class: "muted" }, e.zones.join(", ")));
  return li;
}

function showEvents() {
  const newest = [...events.values()].sort((a, b) => b.id - a.id).slice(0, EVENTS_SHOWN);
  for (const id of events.keys()) if (!newest.some((e) => e.id === id)) events.delete(id);
  document.getElementById("events").replaceChildren(...newest.map(eventItem));
}

// The newest events, then every change as the server stores it. The feed's
// message ids are revisions: EventSource resumes from the last one itself.
async function followEvents() {
  const feedState = document.getElementById("feed");
  const page = await getJson(`/api/v1/events?limit=${EVENTS_SHOWN}`);
  for (const e of page.events) events.set(e.id, e);
  showEvents();
  const after = page.next_after ?? 0;
  const feed = new EventSource(`/api/v1/events/live?after=${after}`);
  feed.addEventListener("event", (m) => {
    const e = JSON.parse(m.data);
    events.set(e.id, e);
    showEvents();
  });
  feed.onopen = () => { feedState.textContent = "· live"; };
  feed.onerror = () => { feedState.textContent = "· reconnecting…"; };
}

async function tick() {
  const status = document.getElementById("status");
  try {
    const cams = await getJson("/api/v1/cameras");
    await Promise.all(cams.map(refreshCamera));
    await refreshDetections();
    status.textContent = `${cams.length} camera${cams.length === 1 ? "" : "s"} · live`;
  } catch (e) {
    status.textContent = `disconnected (${e.message})`;
  }
  setTimeout(tick, POLL_MS);
}

tick();
followEvents().catch((e) => {
  document.getElementById("feed").textContent = `· unavailable (${e.message})`;
});
