// edgetune dashboard: polls the JSON API and renders the fleet and recent events.
// Everything a device sent is inserted as text (textContent), never as HTML.
"use strict";

const POLL_MS = 3000;
const EVENT_LIMIT = 50;
const METRICS_LIMIT = 120;

// A token given once as ?token=… is kept for this tab only and removed from the address bar.
const TOKEN = (() => {
  const params = new URLSearchParams(window.location.search);
  const given = params.get("token");
  if (given) {
    sessionStorage.setItem("edgetune-token", given);
    params.delete("token");
    const query = params.toString();
    history.replaceState(null, "", window.location.pathname + (query ? "?" + query : ""));
  }
  return sessionStorage.getItem("edgetune-token");
})();

let selectedDevice = null;

async function getJSON(path) {
  const headers = { Accept: "application/json" };
  if (TOKEN) headers.Authorization = "Bearer " + TOKEN;
  const response = await fetch(path, { headers, cache: "no-store" });
  const body = await response.json().catch(() => ({}));
  if (!response.ok && !(path === "api/health" && response.status === 503)) {
    throw new Error(path + ": HTTP " + response.status + (body.detail ? " " + body.detail : ""));
  }
  return body;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.appendChild(cell instanceof Node ? cell : el("td", cell));
  return tr;
}

function placeholder(columns, text) {
  const td = el("td", text, "muted");
  td.colSpan = columns;
  return row([td]);
}

function ago(seconds, now) {
  if (seconds === null || seconds === undefined) return "";
  const s = Math.max(0, now - seconds);
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 172800) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " days ago";
}

function when(seconds) {
  return seconds === null || seconds === undefined ? "" : new Date(seconds * 1000).toLocaleString();
}

function timeCell(seconds, now) {
  const td = el("td", ago(seconds, now));
  td.title = when(seconds);
  return td;
}

function renderHealth(health) {
  const line = document.getElementById("health");
  const c = health.counters || {};
  const rejected = c.rejected_total || 0;
  const parts = [
    health.ok ? "ok" : "NOT OK",
    health.broker ? (health.broker.subscribed ? "broker connected" : "broker disconnected") : "no ingest",
    health.database && !health.database.ok ? "database error" : "database ok",
    "stored " + (c.stored || 0),
    "duplicates " + (c.duplicates || 0),
    "rejected " + rejected,
  ];
  if (health.open) parts.push("no token: open to anyone");
  line.textContent = parts.join(" · ") + " · updated " + new Date().toLocaleTimeString();
  line.className = health.ok ? "muted" : "error";
}

function renderFleet(data) {
  const tbody = document.getElementById("fleet-rows");
  const rows = [];
  for (const d of data.devices) {
    const state = el("td", d.state || "unknown", d.state === "online" ? "online" : d.state === "offline" ? "offline" : "muted");
    const bundle = d.bundle_id ? d.bundle_id + (d.bundle_version ? " " + d.bundle_version : "") : "";
    const last = d.last_event
      ? d.last_event.label + " (" + Number(d.last_event.score).toFixed(2) + ", " + ago(d.last_event.observed_at, data.time) + ")"
      : "";
    const tr = row([el("td", d.device), state, timeCell(d.last_seen, data.time), bundle,
      d.head_version ?? "", d.provider || "", d.events, last]);
    tr.className = "device" + (d.device === selectedDevice ? " selected" : "");
    tr.addEventListener("click", () => { selectedDevice = d.device; refresh(); });
    rows.push(tr);
  }
  tbody.replaceChildren(...(rows.length ? rows : [placeholder(8, "no devices yet")]));
}

function renderEvents(data, now) {
  const tbody = document.getElementById("event-rows");
  const rows = data.events.map((e) => {
    const b = e.body;
    const source = el("td", b.source, "source");
    source.title = b.source;
    const tr = row([timeCell(e.observed_at, now), e.device, e.seq, b.pipeline, b.head, b.label,
      Number(b.score).toFixed(3), b.modality, source, b.head_version,
      b.latency_ms === undefined ? "" : Number(b.latency_ms).toFixed(1)]);
    tr.className = "modality-" + (b.modality === "image" || b.modality === "fused" ? b.modality : "audio");
    return tr;
  });
  tbody.replaceChildren(...(rows.length ? rows : [placeholder(11, "no events yet")]));
}

function svg(tag, attrs, text) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = String(text);
  return node;
}

function renderChart(data) {
  document.getElementById("device-panel").hidden = false;
  document.getElementById("device-name").textContent = data.device;
  const chart = document.getElementById("latency-chart");
  const W = 720, H = 180, PAD = 34;
  const points = data.metrics.map((m) => ({ t: m.observed_at, p50: m.body.latency_ms.p50, p95: m.body.latency_ms.p95 }));
  const nodes = [svg("line", { x1: PAD, y1: H - PAD, x2: W - 8, y2: H - PAD, class: "axis" })];
  const legend = document.getElementById("chart-legend");
  if (points.length === 0) {
    nodes.push(svg("text", { x: PAD, y: H / 2 }, "no metrics yet"));
    legend.textContent = "";
  } else {
    const ys = points.flatMap((p) => [p.p50, p.p95]).filter((v) => typeof v === "number");
    const yMax = Math.max(1e-9, ...ys);
    const t0 = points[0].t, t1 = points[points.length - 1].t;
    const x = (t) => PAD + (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5) * (W - PAD - 8);
    const y = (v) => H - PAD - (v / yMax) * (H - PAD - 10);
    for (const key of ["p50", "p95"]) {
      const pts = points.filter((p) => typeof p[key] === "number").map((p) => x(p.t).toFixed(1) + "," + y(p[key]).toFixed(1));
      if (pts.length) nodes.push(svg("polyline", { points: pts.join(" "), class: key }));
    }
    nodes.push(svg("text", { x: 2, y: 14 }, yMax.toFixed(1)));
    nodes.push(svg("text", { x: 2, y: H - PAD }, "0"));
    nodes.push(svg("text", { x: PAD, y: H - 12 }, when(t0)));
    nodes.push(svg("text", { x: W - 160, y: H - 12 }, when(t1)));
    const lastBody = data.metrics[data.metrics.length - 1].body;
    legend.textContent = "blue: p50, orange: p95 · last window: " + lastBody.inferences + " inferences, provider " +
      lastBody.provider + (lastBody.fps !== undefined && lastBody.fps !== null ? ", " + Number(lastBody.fps).toFixed(1) + " fps" : "");
  }
  chart.replaceChildren(...nodes);
}

async function refresh() {
  try {
    const [health, fleet, events] = await Promise.all([
      getJSON("api/health"), getJSON("api/devices"), getJSON("api/events?limit=" + EVENT_LIMIT),
    ]);
    renderHealth(health);
    renderFleet(fleet);
    renderEvents(events, fleet.time);
    if (selectedDevice) {
      renderChart(await getJSON("api/devices/" + encodeURIComponent(selectedDevice) + "/metrics?limit=" + METRICS_LIMIT));
    }
  } catch (err) {
    const line = document.getElementById("health");
    line.textContent = "cannot reach the API: " + err.message;
    line.className = "error";
  }
}

refresh();
setInterval(refresh, POLL_MS);
