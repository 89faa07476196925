// The box at a glance: live charts of CPU, memory, model throughput, each
// camera's decode rate and, on a box with an NVIDIA GPU, how busy the GPU and
// its video decoder are, from /api/v1/stats every two seconds.
import { getJson, el, bytes } from "./lib.js";

const POLL_MS = 2000;
const KEEP = 90; // samples: three minutes

function chart(title, unit) {
  const svg = el("svg", { class: "chart", viewBox: "0 0 300 100", preserveAspectRatio: "none" });
  const value = el("span", { class: "value" });
  const legend = el("div", { class: "legend muted" });
  const fig = el("figure", { class: "panel", "data-chart": title }, el("figcaption", {}, `${title} `, value), svg, legend);
  return {
    fig,
    draw(series) {
      const all = series.flatMap((s) => s.values);
      const max = Math.max(1e-9, ...all) * 1.1;
      svg.replaceChildren(...series.map((s, i) => el("polyline", {
        class: `s${i % 6}`,
        points: s.values.map((v, x) => `${(x / (KEEP - 1)) * 300},${100 - (v / max) * 100}`).join(" "),
      })));
      const last = series.map((s) => s.values.at(-1) ?? 0);
      value.textContent = series.length === 1 ? `${last[0].toFixed(1)} ${unit}` : unit;
      legend.replaceChildren(...(series.length > 1
        ? series.map((s, i) => el("span", { class: `s${i % 6}` }, `${s.name} ${last[i].toFixed(1)}`)) : []));
    },
  };
}

const known = (v, unit) => `${v ?? "?"}${unit}`;

// One row per GPU, or one saying there is none.
function gpuFacts(gpu) {
  if (!gpu?.devices.length) return [["GPU", "none found (no NVIDIA driver)"]];
  return gpu.devices.map((d) => [`GPU ${d.index}`, [
    `${d.name} · driver ${gpu.driver_version}`,
    `${known(d.utilization_percent, "%")} busy, NVDEC ${known(d.decoder_utilization_percent, "%")}`,
    `${d.memory_used_bytes === null ? "?" : bytes(d.memory_used_bytes)} of ${d.memory_total_bytes === null ? "?" : bytes(d.memory_total_bytes)}`
      + (d.process_memory_bytes === null ? "" : ` (${bytes(d.process_memory_bytes)} this process)`),
    `${known(d.temperature_celsius, " °C")}, ${known(d.power_watts?.toFixed(0), " W")}`,
  ].join(" · ")]);
}

export function show(root) {
  const charts = {
    cpu: chart("CPU", "%"), mem: chart("Memory", "MB"),
    fps: chart("Frames through the model", "frames/s"), ms: chart("Model time per batch", "ms"),
    cams: chart("Decoded per camera", "frames/s"),
  };
  const facts = el("table", { id: "system-facts", class: "kv" });
  const grid = el("div", { class: "charts" }, ...Object.values(charts).map((c) => c.fig));
  root.append(el("h2", {}, "System"), grid, facts);
  const history = { cpu: [], mem: [], fps: [], ms: [], cams: new Map(), gpuBusy: new Map(), gpuMem: new Map() };
  let gpuCharts = null; // added when the first stats with a GPU arrive
  const push = (arr, v) => { arr.push(v); if (arr.length > KEEP) arr.shift(); };
  let prev = null;
  let stopped = false;
  let timer = null;

  async function refresh() {
    try {
      const s = await getJson("/api/v1/stats");
      const now = performance.now() / 1000;
      if (prev) {
        const dt = Math.max(0.001, now - prev.at);
        const di = s.inference.batches - prev.s.inference.batches;
        push(history.cpu, ((s.process.cpu_seconds - prev.s.process.cpu_seconds) / dt) * 100);
        push(history.fps, (s.inference.frames - prev.s.inference.frames) / dt);
        push(history.ms, di > 0 ? ((s.inference.inference_seconds - prev.s.inference.inference_seconds) / di) * 1000 : 0);
      }
      push(history.mem, s.process.resident_bytes / 1048576);
      for (const c of s.cameras) {
        if (!history.cams.has(c.id)) history.cams.set(c.id, []);
        push(history.cams.get(c.id), c.ingest.decoded_fps ?? 0);
      }
      prev = { s, at: now };
      charts.cpu.draw([{ name: "cpu", values: history.cpu }]);
      charts.mem.draw([{ name: "rss", values: history.mem }]);
      charts.fps.draw([{ name: "fps", values: history.fps }]);
      charts.ms.draw([{ name: "ms", values: history.ms }]);
      charts.cams.draw([...history.cams].map(([name, values]) => ({ name, values })));
      if (s.gpu?.devices.length) {
        if (!gpuCharts) {
          gpuCharts = { busy: chart("GPU busy", "%"), mem: chart("GPU memory", "MB") };
          grid.append(gpuCharts.busy.fig, gpuCharts.mem.fig);
        }
        const series = (map, name, v) => {
          if (!map.has(name)) map.set(name, []);
          push(map.get(name), v ?? 0);
        };
        for (const d of s.gpu.devices) {
          series(history.gpuBusy, `gpu${d.index}`, d.utilization_percent);
          series(history.gpuBusy, `nvdec${d.index}`, d.decoder_utilization_percent);
          series(history.gpuMem, `gpu${d.index}`, (d.memory_used_bytes ?? 0) / 1048576);
        }
        const named = (map) => [...map].map(([name, values]) => ({ name, values }));
        gpuCharts.busy.draw(named(history.gpuBusy));
        gpuCharts.mem.draw(named(history.gpuMem));
      }
      const i = s.inference;
      const u = s.storage.usage;
      const precision = i.int8_kernel ? `${i.precision}, ${i.int8_kernel} kernel` : i.precision;
      const rows = [["Model", `${i.model} (${precision} on ${i.device}, batches of up to ${i.max_batch})`],
        ["Model errors", i.errors], ["Events opened", i.events_opened],
        ["Stored", `${u.events} events · ${u.detections} detections · ${u.minute_counts} minute counts`],
        ["Disk", `${bytes(u.database_bytes)} database · ${bytes(u.hot_bytes)} hot store`],
        ["Storage writer", `${s.storage.writer.state}${s.storage.writer.last_error ? ` (${s.storage.writer.last_error})` : ""}`],
        ["Memory", `${bytes(s.process.resident_bytes)} (peak ${bytes(s.process.peak_resident_bytes)})`],
        ["Uptime", `${(s.process.uptime_seconds / 3600).toFixed(2)} h`], ...gpuFacts(s.gpu)];
      facts.replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, String(v)))));
    } catch (e) {
      facts.replaceChildren(el("tr", {}, el("td", { class: "error" }, e.message)));
    }
    if (!stopped) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return () => { stopped = true; clearTimeout(timer); };
}
