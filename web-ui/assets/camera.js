// One camera: its live MJPEG stream (boxes drawn by the server) with the
// configured zones and counting lines over it, its stats and its events.
import { getJson, el, eventCard } from "./lib.js";

const POLL_MS = 2000;

/// Zones and lines are in normalised coordinates: a 1 × 1 view box.
function drawZones(svg, zones) {
  svg.replaceChildren();
  for (const z of zones.zones ?? []) {
    const points = z.polygon.map(([x, y]) => `${x},${y}`).join(" ");
    const [lx, ly] = z.polygon[0];
    svg.append(el("g", { class: "zone", "data-zone": z.name },
      el("polygon", { points }), el("text", { x: lx + 0.005, y: ly + 0.03 }, z.name)));
  }
  for (const l of zones.lines ?? []) {
    const [[x1, y1], [x2, y2]] = [l.segment.from, l.segment.to];
    svg.append(el("g", { class: "line", "data-line": l.name },
      el("line", { x1, y1, x2, y2 }), el("text", { x: x1 + 0.005, y: y1 - 0.01 }, l.name)));
  }
}

export function show(root, id) {
  const enc = encodeURIComponent(id);
  const stream = el("img", { id: "camera-stream", alt: `live view of ${id}`, src: `/api/v1/cameras/${enc}/stream.mjpeg` });
  const overlay = el("svg", { class: "zones", viewBox: "0 0 1 1", preserveAspectRatio: "none" });
  const stats = el("table", { id: "camera-stats", class: "kv" });
  const list = el("ol", { class: "events" });
  root.append(
    el("p", {}, el("a", { href: "#/live" }, "← all cameras")),
    el("h2", {}, id),
    el("div", { class: "view large" }, stream, overlay),
    el("h2", {}, "Ingest"), stats,
    el("h2", {}, "Recent events"), list,
  );
  let stopped = false;
  let timer = null;

  async function refresh() {
    try {
      const cam = await getJson(`/api/v1/cameras/${enc}`);
      if (!overlay.childElementCount) drawZones(overlay, cam.zones);
      const i = cam.ingest;
      const rows = [["Source", cam.source], ["State", i.state], ["Decoder", i.decoder ?? "—"],
        ["Input fps", i.input_fps], ["Decoded fps", i.decoded_fps], ["Detect fps", cam.detect_fps],
        ["Decoded", i.frames_decoded], ["Skipped", i.frames_skipped], ["Dropped", i.frames_dropped],
        ["Reconnects", i.reconnects], ["Last error", i.last_error ?? "—"]];
      stats.replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v)))));
      const page = await getJson(`/api/v1/events?camera=${enc}&limit=12`);
      list.replaceChildren(...page.events.slice().reverse().map(eventCard));
    } catch (e) {
      stats.replaceChildren(el("tr", {}, el("td", { class: "error" }, e.message)));
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  // Leaving the page must close the stream's connection.
  return () => { stopped = true; clearTimeout(timer); stream.src = ""; stream.remove(); };
}
