// The live grid: each camera's latest analysed frame with its boxes, the
// newest events (kept current by the server-sent event feed) and the newest
// detections.
import { getJson, el, drawBoxes, eventCard, time } from "./lib.js";

const POLL_MS = 500;
const EVENTS_SHOWN = 24;

export function show(root) {
  const grid = el("section", { id: "cameras", "aria-label": "Live cameras" });
  const feedState = el("span", { id: "feed", class: "muted" });
  const list = el("ol", { id: "events", class: "events" });
  const rows = el("tbody");
  root.append(
    grid,
    el("section", { "aria-label": "Events" }, el("h2", {}, "Events ", feedState), list),
    el("section", { "aria-label": "Recent detections" }, el("h2", {}, "Recent detections"),
      el("table", { id: "detections" },
        el("thead", {}, el("tr", {}, ...["Time", "Camera", "Label", "Score", "Box"].map((h) => el("th", {}, h)))),
        rows)),
  );
  const cards = new Map();
  const events = new Map();
  let stopped = false;
  let timer = null;
  let feed = null;

  function card(cam) {
    let c = cards.get(cam.id);
    if (c) return c;
    const state = el("span", { class: "muted" });
    const placeholder = el("div", { class: "placeholder" }, "waiting for the first frame…");
    const view = el("div", { class: "view" }, placeholder);
    const rootEl = el("article", { class: "camera", "data-camera": cam.id },
      el("header", {}, el("h3", {}, el("a", { href: `#/camera/${encodeURIComponent(cam.id)}` }, cam.id)), state),
      view);
    grid.append(rootEl);
    c = { view, img: el("img", { alt: `latest frame of ${cam.id}` }), svg: el("svg", { preserveAspectRatio: "none" }), state, placeholder, seq: -1 };
    cards.set(cam.id, c);
    return c;
  }

  async function refreshCamera(cam) {
    const c = card(cam);
    const i = cam.ingest;
    c.state.textContent = `${i.state} · ${i.decoder ?? "…"} · ${i.input_fps} fps in · ${i.frames_dropped} dropped`;
    const id = encodeURIComponent(cam.id);
    let snap;
    try { snap = await getJson(`/api/v1/cameras/${id}/snapshot`); } catch { return; }
    if (snap.seq === c.seq || !snap.live) return;
    // Load the picture of exactly this frame, then draw its boxes over it.
    const next = new Image();
    next.onload = () => {
      c.img.src = next.src;
      if (c.placeholder.isConnected) c.placeholder.replaceWith(c.img, c.svg);
      drawBoxes(c.svg, snap);
      c.seq = snap.seq;
    };
    next.src = `/api/v1/cameras/${id}/snapshot.jpg?seq=${snap.seq}`;
  }

  async function refreshDetections() {
    const data = await getJson("/api/v1/detections?limit=15");
    rows.replaceChildren(...data.detections.slice().reverse().map((d) => el("tr", {},
      ...[time(d.frame_time).slice(11), d.camera, d.label, d.score.toFixed(2), d.box.map((v) => v.toFixed(0)).join(", ")]
        .map((v) => el("td", {}, v)))));
  }

  function showEvents() {
    const newest = [...events.values()].sort((a, b) => b.id - a.id).slice(0, EVENTS_SHOWN);
    for (const id of events.keys()) if (!newest.some((e) => e.id === id)) events.delete(id);
    list.replaceChildren(...newest.map(eventCard));
  }

  // The newest events, then every change as the server stores it. The feed's
  // message ids are revisions: EventSource resumes from the last one itself.
  async function followEvents() {
    const page = await getJson(`/api/v1/events?limit=${EVENTS_SHOWN}`);
    for (const e of page.events) events.set(e.id, e);
    showEvents();
    if (stopped) return;
    feed = new EventSource(`/api/v1/events/live?after=${page.next_after ?? 0}`);
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
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  }

  tick();
  followEvents().catch((e) => { feedState.textContent = `· unavailable (${e.message})`; });
  return () => { stopped = true; clearTimeout(timer); if (feed) feed.close(); };
}
