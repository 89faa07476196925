// The events timeline (newest first, filters, older pages by revision
// cursor) and one event's page with its snapshot.
import { getJson, el, eventCard, time, pct } from "./lib.js";

const PAGE = 48;

export function show(root) {
  const form = el("form", { id: "event-filters", class: "filters" },
    el("label", {}, "Camera ", el("select", { name: "camera" }, el("option", { value: "" }, "all"))),
    el("label", {}, "Label ", el("input", { name: "label", placeholder: "person", size: 10 })),
    el("label", {}, "Zone ", el("input", { name: "zone", size: 10 })),
    el("label", {}, "Min score ", el("input", { name: "min_score", type: "number", min: 0, max: 1, step: 0.05, value: "" })),
    el("label", {}, "From ", el("input", { name: "from", type: "datetime-local" })),
    el("label", {}, "To ", el("input", { name: "to", type: "datetime-local" })),
    el("button", { type: "submit" }, "Filter"));
  const list = el("ol", { id: "timeline", class: "events" });
  const more = el("button", { type: "button", hidden: true }, "Older events");
  const note = el("p", { class: "muted" });
  root.append(el("h2", {}, "Events"), form, list, note, more);

  getJson("/api/v1/cameras").then((cams) => {
    const select = form.elements.camera;
    for (const c of cams) select.append(el("option", { value: c.id }, c.id));
  }).catch(() => {});

  let before = null;
  let filters = new URLSearchParams();

  async function load(reset) {
    if (reset) { list.replaceChildren(); before = null; }
    const q = new URLSearchParams(filters);
    q.set("limit", PAGE);
    if (before !== null) q.set("before", before);
    try {
      const page = await getJson(`/api/v1/events?${q}`);
      const newest = page.events.slice().reverse();
      list.append(...newest.map(eventCard));
      if (newest.length) before = newest[newest.length - 1].revision;
      more.hidden = page.events.length < PAGE;
      note.textContent = list.children.length ? "" : "No events match.";
    } catch (e) {
      note.textContent = e.message;
    }
  }

  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    filters = new URLSearchParams();
    for (const [k, v] of new FormData(form)) {
      if (v === "") continue;
      // datetime-local is the browser's local time: send it as an instant.
      filters.set(k, k === "from" || k === "to" ? new Date(v).toISOString() : v);
    }
    load(true);
  });
  more.addEventListener("click", () => load(false));
  load(true);
}

export function showOne(root, id) {
  const body = el("div", { id: "event-detail" }, el("p", { class: "muted" }, "loading…"));
  root.append(el("p", {}, el("a", { href: "#/events" }, "← all events")), body);
  getJson(`/api/v1/events/${encodeURIComponent(id)}`).then((e) => {
    const facts = [
      ["Camera", el("a", { href: `#/camera/${encodeURIComponent(e.camera)}` }, e.camera)],
      ["Label", e.label], ["Track", `#${e.track_id}`], ["Best score", pct(e.max_score)],
      ["Started", time(e.start_time)], ["Ended", e.end_time ? time(e.end_time) : "still in view"],
      ["Zones", e.zones.join(", ") || "—"], ["Box", e.box.map((v) => v.toFixed(0)).join(", ")],
      ["Revision", String(e.revision)],
    ];
    body.replaceChildren(
      el("h2", {}, `${e.label} #${e.track_id} on ${e.camera}`),
      e.snapshot ? el("img", { id: "event-snapshot", class: "snapshot", src: e.snapshot, alt: `snapshot of ${e.label}` })
        : el("p", { class: "muted" }, "No snapshot was kept for this event."),
      el("dl", { class: "facts" }, ...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
    );
  }).catch((err) => body.replaceChildren(el("p", { class: "error" }, err.message)));
}
