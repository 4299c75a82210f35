// tickerd dashboard: listens on the ops port's /dashboard/live WebSocket and redraws.
// Plain script, no dependencies; every value is written with textContent (never as HTML).
"use strict";

const HISTORY = 120; // requests/s points kept for the sparkline
const rates = [];
const priceRows = new Map(); // symbol -> {row, cells, price}
let retryMs = 500;

const $ = (id) => document.getElementById(id);

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fillTable(id, items, makeRow) {
  const body = $(id).tBodies[0];
  body.replaceChildren(...items.map((item) => {
    const tr = document.createElement("tr");
    makeRow(tr, item);
    return tr;
  }));
  const empty = $(id + "-empty");
  if (empty) empty.hidden = items.length > 0;
}

function seconds(ms) {
  if (ms === null || ms === undefined) return "–";
  if (ms < 0) ms = 0;
  if (ms < 10000) return (ms / 1000).toFixed(1) + " s";
  if (ms < 3600000) return Math.round(ms / 1000) + " s";
  return (ms / 3600000).toFixed(1) + " h";
}

function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  return (d ? d + "d " : "") + (d || h ? h + "h " : "") + m + "m " + Math.floor(s % 60) + "s";
}

function target(t) {
  if (!t || (t.ip === null && t.conn === null)) return "all clients";
  return [t.ip, t.conn !== null ? "conn " + t.conn : null].filter(Boolean).join(", ");
}

function drawSpark() {
  const canvas = $("spark");
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  if (rates.length < 2) return;
  const top = Math.max(1, ...rates);
  ctx.strokeStyle = "#4aa3ff";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  rates.forEach((r, i) => {
    const x = (i / (HISTORY - 1)) * w, y = h - 2 - (r / top) * (h - 4);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

function renderPrices(prices) {
  const body = $("prices").tBodies[0];
  const seen = new Set();
  for (const p of prices) {
    seen.add(p.symbol);
    let entry = priceRows.get(p.symbol);
    if (!entry) {
      const row = document.createElement("tr");
      row.dataset.symbol = p.symbol;
      const cells = [cell(row, p.symbol), cell(row, "", "num price"), cell(row, "", "num change"),
                     cell(row, "", "num pct"), cell(row, "", "num age")];
      entry = { row, cells, price: null };
      priceRows.set(p.symbol, entry);
      body.appendChild(row);
    }
    const [, price, change, pct, age] = entry.cells;
    if (entry.price !== null && entry.price !== p.price) {
      price.classList.remove("flash-up", "flash-down");
      void price.offsetWidth; // restart the animation
      price.classList.add(p.move >= 0 ? "flash-up" : "flash-down");
    }
    entry.price = p.price;
    price.textContent = p.price;
    const sign = p.change.startsWith("-") ? "down-move" : p.change.match(/[1-9]/) ? "up-move" : "";
    change.textContent = p.change;
    change.className = "num change " + sign;
    pct.textContent = p.change_pct + "%";
    pct.className = "num pct " + sign;
    age.textContent = seconds(p.age_ms);
  }
  for (const [symbol, entry] of priceRows) {
    if (!seen.has(symbol)) { entry.row.remove(); priceRows.delete(symbol); }
  }
  applyFilter();
}

function applyFilter() {
  const f = $("filter").value.trim().toUpperCase();
  for (const [symbol, entry] of priceRows) entry.row.hidden = f !== "" && !symbol.includes(f);
}

function renderWorkers(workers) {
  const badge = $("workers");
  badge.hidden = !workers; // one process: no workers to show
  if (!workers) return;
  const down = workers.filter((w) => w.state !== "up");
  badge.textContent = "workers " + (workers.length - down.length) + " of " + workers.length + " up";
  badge.className = "badge " + (down.length ? "down" : "live");
  badge.title = down.map((w) => "worker " + w.worker + " down: " + w.error).join("\n");
}

function render(s) {
  renderWorkers(s.workers);
  $("version").textContent = "v" + s.version;
  $("clock").textContent = s.now;
  $("uptime").textContent = "up " + duration(s.uptime_s);
  $("rps").textContent = s.requests_per_s.toLocaleString("en-US");
  $("requests").textContent = s.requests_total.toLocaleString("en-US");
  $("connections").textContent = s.connections.open.toLocaleString("en-US");
  $("connections-max").textContent = s.connections.max === null ? "" : "of " + s.connections.max.toLocaleString("en-US") + " allowed";
  $("bans-count").textContent = s.bans_total;
  $("faults-count").textContent = s.faults_total;
  $("symbols").textContent = s.symbols;
  $("limit").textContent = "limit " + s.weight_limit.toLocaleString("en-US") + " / minute";
  rates.push(s.requests_per_s);
  while (rates.length > HISTORY) rates.shift();
  drawSpark();

  fillTable("clients", s.clients, (tr, c) => {
    tr.dataset.ip = c.ip;
    cell(tr, c.ip);
    cell(tr, c.used.toLocaleString("en-US"), "num");
    const td = cell(tr, "");
    const bar = document.createElement("div");
    bar.className = "bar" + (c.percent > 100 ? " over" : c.percent >= 80 ? " hot" : "");
    bar.title = c.percent + " %";
    const fill = document.createElement("span");
    fill.style.width = Math.min(100, c.percent) + "%";
    bar.appendChild(fill);
    td.appendChild(bar);
  });
  fillTable("bans", s.bans, (tr, b) => {
    tr.dataset.ip = b.ip;
    cell(tr, b.ip);
    cell(tr, b.until);
    cell(tr, seconds(b.remaining_ms), "num");
  });
  fillTable("feeds", s.feeds, (tr, f) => {
    tr.dataset.feed = f.name;
    cell(tr, f.name);
    const badge = document.createElement("span");
    badge.className = "badge " + (f.state || "");
    badge.textContent = f.state || "–";
    cell(tr, "").appendChild(badge);
    cell(tr, f.ticks.toLocaleString("en-US"), "num");
    cell(tr, f.newest_tick_age_ms === null ? "–" : seconds(f.newest_tick_age_ms) + " ago", "num");
  });
  fillTable("faults", s.faults, (tr, f) => {
    tr.dataset.fault = f.id;
    cell(tr, String(f.id));
    cell(tr, f.kind);
    cell(tr, target(f.target));
    const rest = Object.entries(f).filter(([k]) => !["id", "kind", "target"].includes(k));
    cell(tr, rest.map(([k, v]) => k + " " + v).join(", "));
  });
  renderPrices(s.prices);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss://" : "ws://";
  const ws = new WebSocket(scheme + location.host + "/dashboard/live");
  const link = $("link");
  ws.onopen = () => { retryMs = 500; link.textContent = "live"; link.className = "badge live"; };
  ws.onmessage = (ev) => { render(JSON.parse(ev.data)); };
  ws.onclose = () => {
    link.textContent = "reconnecting";
    link.className = "badge down";
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

document.addEventListener("DOMContentLoaded", () => {
  $("filter").addEventListener("input", applyFilter);
  connect();
});
