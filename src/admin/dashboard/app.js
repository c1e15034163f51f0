// Switchyard dashboard: polls the admin API, draws with uPlot (embedded), and
// streams the chat playground through the gateway's API listener. Every value
// from the server goes into the page as text (textContent), never as HTML.
"use strict";

const TOKEN_KEY = "switchyard-admin-token";
const state = { token: sessionStorage.getItem(TOKEN_KEY) || "", status: null, keys: [], charts: {}, models: "" };
const $ = (id) => document.getElementById(id);
// Every time on the page is UTC (the header says so once).
const utc = (ts) => uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c)));
  return e;
}

async function api(path, opts) {
  const headers = Object.assign({}, (opts && opts.headers) || {});
  if (state.token) headers["authorization"] = "Bearer " + state.token;
  const res = await fetch(path, Object.assign({}, opts, { headers }));
  if (res.status === 401) {
    if (state.token && headers["authorization"] === "Bearer " + state.token) {
      state.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
    }
    askToken("The token was not accepted.");
    throw new Error("unauthorized");
  }
  const body = await res.json().catch(() => null);
  if (!res.ok || body == null) {
    throw new Error((body && body.error && body.error.message) || `${res.status} ${res.statusText}`.trim());
  }
  return body;
}

const needsToken = () => document.body.dataset.auth === "token" && !state.token;

function askToken(msg) {
  document.body.classList.add("locked");
  $("login").style.display = "flex";
  $("login-err").textContent = msg || "";
  $("login-token").focus();
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("login-token").value.trim();
  $("login-token").value = "";
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("login").style.display = "none";
  document.body.classList.remove("locked");
  refreshAll();
});

// Log out: forget the token, drop what the page shows, ask again.
$("logout").addEventListener("click", () => {
  state.token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  for (const name of Object.keys(seqs)) seqs[name]++; // answers on their way are dropped
  for (const id of ["keys", "upstreams", "tokens", "requests", "clients-table", "audit-table"]) $(id).tBodies[0].replaceChildren();
  hideNewKey();
  $("cards").replaceChildren();
  $("meta").textContent = "";
  showConn(null);
  askToken("Logged out.");
});

// Answers of a poll that a newer one of the same name overtook are dropped
// (a filter changed while the old request was on its way).
const seqs = {};
async function latest(name, load, render, fail) {
  const n = (seqs[name] = (seqs[name] || 0) + 1);
  try {
    const v = await load();
    if (n === seqs[name]) render(v);
  } catch (e) {
    if (n === seqs[name] && e.message !== "unauthorized") fail(e);
  }
}

function debounce(fn, ms) {
  let t = null;
  return (...args) => { clearTimeout(t); t = setTimeout(() => fn(...args), ms); };
}

function fmtNum(n) {
  const a = Math.abs(n);
  if (a >= 1e9) return +(n / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return +(n / 1e6).toFixed(1) + "M";
  if (a >= 1e4) return +(n / 1e3).toFixed(1) + "k";
  return String(+n.toFixed(2));
}

function fmtSecs(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}

function card(label, value) {
  return el("div", { class: "card" }, el("b", {}, value), el("span", {}, label));
}

function renderFleet(s) {
  const fleet = Array.isArray(s.fleet) ? s.fleet : null;
  $("fleet-section").hidden = !fleet;
  if (!fleet) return;
  $("fleet-banner").hidden = s.store !== "down";
  $("fleet").tBodies[0].replaceChildren(...fleet.map((i) => el("tr", {},
    el("td", {}, i.id + (i.this ? " (this)" : "")),
    el("td", {}, el("span", { class: "state " + (i.state === "up" ? "up" : "down") }, i.state)),
    el("td", {}, i.version || ""),
    el("td", {}, i.host || ""),
    el("td", {}, i.api || ""),
    el("td", { class: "num" }, i.uptime_seconds == null ? "" : fmtSecs(i.uptime_seconds)),
    el("td", { class: "num" }, i.requests_per_second == null ? "" : i.requests_per_second.toFixed(1)),
    el("td", { class: "num" }, i.in_flight == null ? "" : i.in_flight),
    el("td", {}, (i.last_seen || "").replace("T", " ").replace("Z", "")),
  )));
}

function renderStatus(s) {
  state.status = s;
  renderFleet(s);
  $("meta").textContent = `v${s.version} · up ${fmtSecs(s.uptime_seconds)} · pid ${s.pid} · API ${s.listen.map((l) => l.addr).join(", ")}`;
  const k = s.keys;
  $("cards").replaceChildren(
    card("requests/s (10 s)", s.requests_per_second.toFixed(1)),
    card("in flight", s.in_flight),
    card("upstream calls open", s.upstream_active),
    card("queued" + (s.queue_limit ? ` (of ${s.queue_limit})` : ""), s.queue_waiting),
    card("keys active", `${k.active} / ${k.total}`),
    card("keys cooling", k.cooling),
    card("keys parked", k.parked),
  );
  // the playground's suggestions: any name may still be typed
  const models = Array.isArray(s.models) ? s.models.map(String) : [];
  const joined = models.join("\n");
  if (joined !== state.models) {
    state.models = joined;
    $("pg-models").replaceChildren(...models.map((m) => el("option", { value: m })));
    $("pg-model").placeholder = models.length ? models[0] : "model";
  }
  const l = s.listen.find((x) => !x.addr.startsWith("/") && !x.addr.startsWith("unix:"));
  $("pg-target").textContent = l ? "via " + apiBase() + "/v1/chat/completions" : "the API listens on a unix socket only";
}

function apiBase() {
  const s = state.status;
  const l = s && s.listen.find((x) => !x.addr.startsWith("/") && !x.addr.startsWith("unix:"));
  if (!l) return null;
  const port = l.addr.slice(l.addr.lastIndexOf(":") + 1);
  const host = location.hostname.includes(":") ? `[${location.hostname}]` : location.hostname;
  return `${l.tls ? "https" : "http"}://${host}:${port}`;
}

function keyAction(id, action) {
  return api(`/admin/keys/${encodeURIComponent(id)}/${action}`, { method: "POST" }).then(() => refresh(), (e) => showConn(e));
}

function renderKeys(body) {
  state.keys = body.keys;
  const rows = body.keys.map((k) => {
    const tr = el("tr", { "data-key": k.short_id },
      el("td", {}, k.id),
      el("td", {}, k.upstream),
      el("td", {}, el("span", { class: "state " + k.state }, k.state + (k.scope_model ? ` (${k.scope_model})` : ""))),
      el("td", { class: "countdown", "data-until": k.until_ms == null ? "" : String(k.until_ms) }, ""),
      el("td", { class: "wrap" }, k.reason || ""),
      el("td", { class: "num" }, k.requests),
      el("td", { class: "num" }, k.rate_limited),
      el("td", { class: "num" }, k.in_flight),
      el("td", {},
        k.state === "parked"
          ? el("button", { onclick: () => keyAction(k.short_id, "enable") }, "enable")
          : el("button", { onclick: () => keyAction(k.short_id, "disable") }, "disable"),
        " ",
        el("button", { onclick: () => keyAction(k.short_id, "reset") }, "reset")),
    );
    return tr;
  });
  $("keys").tBodies[0].replaceChildren(...rows);
  tick();
}

// Every second: the countdowns; a cooling key whose time has come shows as
// active (the next refresh confirms it) rather than "cooling 0s".
function tick() {
  const now = Date.now();
  for (const td of document.querySelectorAll("td.countdown")) {
    const until = td.getAttribute("data-until");
    const badge = td.parentNode.querySelector(".state");
    if (!until) {
      td.textContent = badge && badge.classList.contains("parked") ? "until enabled" : "";
      continue;
    }
    const left = Number(until) - now;
    if (left > 0) { td.textContent = fmtSecs(Math.ceil(left / 1000)); continue; }
    td.textContent = "";
    if (badge && badge.classList.contains("cooling")) {
      badge.className = "state active";
      badge.textContent = "active";
      badge.title = "recovered: its cooldown is over";
    }
  }
}

function renderUpstreams(body) {
  $("upstreams").tBodies[0].replaceChildren(...body.upstreams.map((u) => el("tr", {},
    el("td", {}, u.name),
    el("td", {}, el("span", { class: "state " + u.health.state }, u.health.state)),
    el("td", {}, u.keys ? `${u.keys_ready} / ${u.keys}` : "no keys"),
    el("td", { class: "wrap" }, u.health.reason || ""),
  )));
}

// A usage name the store has no name for: a request refused before its
// model (or client) was known. A client "-" is also every caller of a
// gateway without clients: when no named client shows, it is said so.
const REFUSED = "(refused before routing)";
const unnamed = (name) => name == null || name === "" || name === "-";
function usageLabel(by, name, namedClients) {
  if (!unnamed(name)) return String(name);
  return by === "client" && !namedClients ? "(no client key)" : REFUSED;
}

function renderTokens(byModel, byClient) {
  const rows = [];
  for (const [by, body] of [["model", byModel], ["client", byClient]]) {
    const list = (body.rows || []).slice();
    const named = list.some((r) => !unnamed(r[by]));
    // the server sorts by requests; the unnamed row goes last whatever its size
    list.sort((a, b) => Number(unnamed(a[by])) - Number(unnamed(b[by])));
    for (const r of list) {
      const anon = unnamed(r[by]);
      rows.push(el("tr", { "data-by": by, "data-name": anon ? "" : String(r[by]) },
        el("td", { class: "dim" }, by),
        el("td", anon ? { class: "dim", title: by === "client" && !named
          ? "callers without a client key (a gateway with no clients), or refused before one was known"
          : "requests refused before a " + by + " was known" } : {}, usageLabel(by, r[by], named)),
        el("td", { class: "num" }, r.requests),
        el("td", { class: "num" }, r.tokens_in), el("td", { class: "num" }, r.tokens_out), el("td", { class: "num" }, r.errors)));
    }
  }
  $("tokens").tBodies[0].replaceChildren(...rows);
  $("tokens-scope").textContent = byModel.scope === "fleet"
    ? ` — the fleet (${byModel.instances} instances)`
    : byModel.fleet_down ? " — this instance only (the fleet's store is down)" : "";
}

// The recent requests' filters, as the query of /admin/requests (empty
// ones left out; percent-encoded, a space as %20: the server reads no "+").
function requestsQuery() {
  const q = [["limit", $("f-limit").value || "25"], ["status", $("f-status").value],
    ["client", $("f-client").value.trim()], ["model", $("f-model").value.trim()], ["since", $("f-since").value]];
  return "/admin/requests?" + q.filter(([, v]) => v).map(([k, v]) => k + "=" + encodeURIComponent(v)).join("&");
}

function renderRequests(body) {
  $("req-err").textContent = "";
  const list = body.requests || [];
  const rows = list.map((r) => el("tr", { "data-status": String(r.status), title: r.request_id ? "request id " + r.request_id : "" },
    el("td", {}, String(r.time || "").replace("T", " ").replace("Z", "")),
    el("td", unnamed(r.client) ? { class: "dim" } : {}, r.client || "-"),
    el("td", unnamed(r.model) ? { class: "dim", title: REFUSED } : {},
      r.served_model && r.served_model !== r.model ? `${r.model} → ${r.served_model}` : (r.model || "-")),
    el("td", {}, r.upstream || "-"),
    el("td", {}, r.key || "-"),
    el("td", { class: "num" + (r.status >= 400 ? " err" : "") }, r.status),
    el("td", { class: "num" }, r.attempts),
    el("td", { class: "num" }, typeof r.latency_ms === "number" ? r.latency_ms.toFixed(1) + " ms" : "—"),
    el("td", { class: "num ttft" }, typeof r.ttft_ms === "number" ? r.ttft_ms.toFixed(1) + " ms" : "—"),
    el("td", { class: "num" }, `${r.tokens_in}/${r.tokens_out}${r.estimated ? "*" : ""}`),
    el("td", { class: "wrap err" }, r.error),
    el("td", { class: "rid", title: r.request_id || "" }, r.request_id || ""),
  ));
  if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { class: "dim", colspan: "12" }, "no request matches")));
  $("requests").tBodies[0].replaceChildren(...rows);
}

const AXIS = { stroke: "#8a94a3", grid: { stroke: "#262c35" }, ticks: { stroke: "#262c35" } };
const chartWidth = (target) => Math.max(200, target.clientWidth || 500);

// Draws `data` in the chart `id`; a new chart when its series changed.
function chart(id, series, data, extra) {
  if (typeof uPlot === "undefined") return;
  const target = $(id);
  const sig = series.map((s) => s.label).join("\n");
  const old = state.charts[id];
  if (old && old.sig === sig) { old.u.setData(data); return; }
  if (old) old.u.destroy();
  const height = (extra && extra.height) || 200;
  const u = new uPlot(Object.assign({
    width: chartWidth(target), height,
    tzDate: utc,
    series: [{}].concat(series),
    axes: [Object.assign({}, AXIS), Object.assign({}, AXIS)],
    scales: { x: { time: true } },
  }, extra && extra.opts), data, target);
  state.charts[id] = { u, sig, height };
}

// Charts follow their section's width.
window.addEventListener("resize", debounce(() => {
  for (const [id, c] of Object.entries(state.charts)) {
    const w = chartWidth($(id));
    if (w !== c.u.width) c.u.setSize({ width: w, height: c.height });
  }
}, 100));

function renderSeries(body) {
  const s = body.seconds;
  const t = s.map((x) => x.t);
  chart("chart-rps", [
    { label: "requests/s", stroke: "#58a6ff", width: 2 },
    { label: "errors/s", stroke: "#f85149", width: 1.5 },
  ], [t, s.map((x) => x.requests), s.map((x) => x.errors)]);
  chart("chart-lat", [
    { label: "p50", stroke: "#3fb950" },
    { label: "p95", stroke: "#d29922" },
    { label: "p99", stroke: "#f85149" },
  ], [t, s.map((x) => x.p50), s.map((x) => x.p95), s.map((x) => x.p99)]);
}

function showConn(e) {
  $("conn").textContent = e ? "⚠ " + e.message : "";
  $("conn").className = e ? "meta err" : "meta";
}

// Usage over time: tokens (in + out) per bucket, the 6 biggest names and
// the rest as "other"; buckets without traffic are 0.
const PERIODS = { "24h": ["hour", 86400], "7d": ["hour", 7 * 86400], "30d": ["day", 30 * 86400] };
const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#f85149", "#bc8cff", "#39c5cf", "#8a94a3"];
const TOP = 6;

function usageSeriesPath() {
  const since = $("usage-period").value in PERIODS ? $("usage-period").value : "24h";
  const by = $("usage-by").value === "client" ? "client" : "model";
  return `/admin/usage/series?by=${by}&since=${since}&bucket=${PERIODS[since][0]}`;
}

function renderUsageSeries(body) {
  const by = body.by === "client" ? "client" : "model";
  const period = PERIODS[$("usage-period").value] || PERIODS["24h"];
  const step = Number(body.bucket_seconds) > 0 ? Number(body.bucket_seconds)
    : (body.bucket || period[0]) === "day" ? 86400 : 3600;
  const points = Array.isArray(body.points) ? body.points : [];
  const now = Date.now() / 1000;
  let since = Date.parse(body.since) / 1000;
  if (!Number.isFinite(since)) since = now - period[1];
  // every bucket from `since` to now, and any the server has beyond them
  const ts = new Set();
  for (let t = Math.floor(since / step) * step; t <= now && ts.size < 2000; t += step) ts.add(t);
  for (const p of points) if (Number.isFinite(p.t)) ts.add(p.t);
  const times = [...ts].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  // names by their total tokens; the unnamed one as a label of its own
  const totals = new Map();
  for (const p of points) {
    const key = unnamed(p.name) ? "" : String(p.name);
    totals.set(key, (totals.get(key) || 0) + (p.tokens_in || 0) + (p.tokens_out || 0));
  }
  const ranked = [...totals.entries()]
    .sort((a, b) => b[1] - a[1] || Number(a[0] === "") - Number(b[0] === "") || (a[0] < b[0] ? -1 : 1))
    .map(([n]) => n);
  const shown = ranked.length <= TOP + 1 ? ranked : ranked.slice(0, TOP);
  const slot = new Map(shown.map((n, i) => [n, i]));
  const rest = ranked.length > shown.length;
  const named = ranked.some((n) => n !== "");
  const labels = shown.map((n) => usageLabel(by, n, named)).concat(rest ? ["other"] : []);
  const values = labels.map(() => times.map(() => 0));
  for (const p of points) {
    const key = unnamed(p.name) ? "" : String(p.name);
    const i = slot.has(key) ? slot.get(key) : labels.length - 1;
    const j = index.get(p.t);
    if (j != null) values[i][j] += (p.tokens_in || 0) + (p.tokens_out || 0);
  }
  $("usage-msg").className = "dim";
  $("usage-msg").textContent = points.length ? `${ranked.length} ${by}${ranked.length === 1 ? "" : "s"}, ${step === 86400 ? "daily" : step === 3600 ? "hourly" : "every " + fmtSecs(step)}` : "no traffic in this period";
  const series = labels.map((label, i) => ({
    label, stroke: PALETTE[i % PALETTE.length], width: 1.5, value: (u, v) => (v == null ? "—" : fmtNum(v)),
  }));
  const tokensAxis = Object.assign({}, AXIS, { size: 56, values: (u, splits) => splits.map(fmtNum) });
  chart("chart-usage", series, [times].concat(values), { height: 240, opts: { axes: [Object.assign({}, AXIS), tokensAxis] } });
}

function refreshUsageSeries() {
  if (needsToken()) return;
  return latest("usage-series", () => api(usageSeriesPath()), renderUsageSeries, (e) => {
    $("usage-msg").className = "err";
    $("usage-msg").textContent = "⚠ " + e.message;
  });
}

function refreshRequests() {
  if (needsToken()) return;
  return latest("requests", () => api(requestsQuery()), renderRequests, (e) => { $("req-err").textContent = "⚠ " + e.message; });
}

function refreshTokens() {
  if (needsToken()) return;
  return latest("tokens", () => Promise.all([api("/admin/usage?by=model&since=24h"), api("/admin/usage?by=client&since=24h")]),
    ([m, c]) => renderTokens(m, c), showConn);
}

function refresh() {
  if (needsToken()) { if ($("login").style.display !== "flex") askToken(); return; }
  return latest("live", () => Promise.all([
    api("/admin/status"), api("/admin/keys"), api("/admin/upstreams"), api("/admin/series?seconds=120"),
  ]), ([status, keys, ups, series]) => {
    renderStatus(status); renderKeys(keys); renderUpstreams(ups); renderSeries(series);
    showConn(null);
  }, showConn);
}

function renderCache(c) {
  $("cache-section").hidden = !c.enabled;
  if (!c.enabled) return;
  $("cache-scope").textContent = ` — ${c.store}, scope ${c.scope}, ttl ${c.ttl}`;
  const looked = c.hits + c.misses;
  const cards = [card("hits", c.hits), card("misses", c.misses),
    card("hit rate", looked ? `${Math.round((100 * c.hits) / looked)}%` : "–"),
    card("tokens saved", c.tokens_saved)];
  if (c.entries != null) cards.push(card("answers kept", c.entries), card("bytes kept", `${(c.bytes / 1048576).toFixed(1)} MiB`));
  $("cache-cards").replaceChildren(...cards);
}

function refreshCache() {
  if (needsToken()) return;
  return latest("cache", () => api("/admin/cache"), renderCache, showConn);
}

$("cache-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const model = $("cache-model").value.trim();
  if (!model && !confirm("Purge every cached answer?")) return;
  const q = model ? `?model=${encodeURIComponent(model)}` : "";
  api(`/admin/cache/purge${q}`, { method: "POST" }).then((r) => {
    $("cache-msg").textContent = `purged ${r.purged}`;
    refreshCache();
  }, (e) => { $("cache-msg").textContent = "⚠ " + e.message; });
});

// Clients (run-time keys, quotas and spend). A new or rotated key is shown
// once, in the #new-key box, and kept nowhere else: not in the table, not
// in storage; "Done" (or logging out) drops it from the page.
// changes to clients must say JSON (the admin listener refuses others: a page elsewhere cannot make one)
const ACTOR = { "x-switchyard-actor": "dashboard", "content-type": "application/json" };
const fmtInt = (n) => Math.round(Number(n) || 0).toLocaleString("en-US");
const fmtTime = (iso) => String(iso || "").replace("T", " ").replace(/\.\d+/, "").replace("Z", "");

function fmtUsd(v) {
  const n = Number(v) || 0;
  const a = Math.abs(n);
  if (a === 0) return "$0.00";
  if (a < 0.0001) return "<$0.0001";
  if (a < 1) return "$" + n.toFixed(4).replace(/(\.\d\d\d*?)0+$/, "$1");
  return "$" + n.toLocaleString("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

// "3 / 60"; a limit not set is "∞"
const usedOf = (used, limit) => `${fmtInt(used)} / ${limit == null ? "∞" : fmtInt(limit)}`;

function quotaBar(q) {
  const usd = q.unit === "usd";
  const fmt = usd ? fmtUsd : fmtInt;
  const used = Number(q.used) || 0, reserved = Number(q.reserved) || 0, limit = Number(q.limit) || 0;
  const pct = (x) => (limit > 0 ? Math.min(100, (100 * x) / limit) : 0);
  const taken = used + reserved;
  const level = limit > 0 && taken >= limit ? " over" : limit > 0 && taken >= 0.8 * limit ? " warn" : "";
  const a = el("span", {}), b = el("span", { class: "reserved" });
  a.style.width = pct(used) + "%";
  b.style.width = Math.max(0, pct(taken) - pct(used)) + "%";
  const text = `${fmt(taken)} / ${fmt(limit)}${usd ? "" : " tokens"} per ${q.per}` + (q.resets ? `, resets ${fmtTime(q.resets).slice(0, 16)}` : "");
  return el("div", { class: "quota" + level, title: `used ${fmt(used)}, reserved for calls under way ${fmt(reserved)}, left ${fmt(q.left == null ? Math.max(0, limit - taken) : q.left)}` },
    el("div", { class: "bar" }, a, b), el("span", { class: "qtext" }, text));
}

function renderClients(body) {
  const list = Array.isArray(body.clients) ? body.clients : [];
  const rows = list.map((c) => {
    const readOnly = c.read_only || c.source === "config";
    const u = c.usage || {}, spend = c.spend || {};
    const models = Array.isArray(c.models) ? c.models : [];
    const quotas = Array.isArray(c.quotas) ? c.quotas : [];
    const actions = !readOnly && c.status === "active" ? [
      el("button", { type: "button", class: "revoke", "data-client": c.name, onclick: () => revokeClient(c.name) }, "Revoke"),
      " ",
      el("button", { type: "button", class: "rotate", "data-client": c.name, onclick: () => rotateClient(c.name) }, "Rotate"),
    ] : [];
    return el("tr", { "data-client": c.name, "data-status": c.status || "" },
      el("td", { class: "wrap" },
        el("b", {}, c.name),
        readOnly ? el("span", { class: "dim ro" }, " config file, read only") : "",
        c.key_hint ? el("span", { class: "dim" }, " key " + c.key_hint) : "",
        c.notes ? el("div", { class: "notes" }, c.notes) : ""),
      el("td", {}, el("span", { class: "state " + (c.status || "") }, c.status || "")),
      el("td", models.length ? { class: "wrap" } : { class: "dim" }, models.length ? models.join(", ") : "all"),
      el("td", { class: "num rpm" }, usedOf(u.rpm_used, c.rpm)),
      el("td", { class: "num tpm" }, usedOf(u.tpm_used, c.tpm)),
      el("td", { class: "num conc" }, usedOf(u.in_flight, c.max_concurrent)),
      el("td", { class: "quotas" }, ...(quotas.length ? quotas.map(quotaBar) : [el("span", { class: "dim" }, "none")])),
      el("td", { class: "num" }, fmtUsd(spend.today_usd)),
      el("td", { class: "num" }, fmtUsd(spend.month_usd)),
      el("td", c.expires ? {} : { class: "dim" }, c.expires ? fmtTime(c.expires) : "never"),
      el("td", c.last_seen ? {} : { class: "dim" }, c.last_seen ? fmtTime(c.last_seen) : "never"),
      el("td", {}, ...actions),
    );
  });
  if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { class: "dim", colspan: "12" }, "no clients: the API needs no client key")));
  $("clients-table").tBodies[0].replaceChildren(...rows);
}

function renderAudit(body) {
  const list = Array.isArray(body.audit) ? body.audit : [];
  const rows = list.map((a) => el("tr", { "data-action": a.action || "", "data-client": a.client || "" },
    el("td", {}, fmtTime(a.ts)),
    el("td", {}, a.actor || ""),
    el("td", {}, a.address || ""),
    el("td", {}, a.action || ""),
    el("td", {}, a.client || ""),
    el("td", { class: "wrap" }, a.detail || ""),
  ));
  if (!rows.length) rows.push(el("tr", { class: "empty" }, el("td", { class: "dim", colspan: "6" }, "no changes yet")));
  $("audit-table").tBodies[0].replaceChildren(...rows);
}

function refreshClients() {
  if (needsToken()) return;
  return latest("clients", () => Promise.all([api("/admin/clients"), api("/admin/clients/audit?limit=50")]), ([c, a]) => {
    renderClients(c); renderAudit(a);
    $("clients-msg").textContent = "";
  }, (e) => {
    $("clients-msg").className = "err";
    $("clients-msg").textContent = "⚠ " + e.message;
  });
}

function showNewKey(name, key) {
  $("new-key-client").textContent = name;
  $("new-key-value").textContent = key;
  $("new-key-msg").textContent = "";
  $("new-key").hidden = false;
  $("new-key").scrollIntoView({ block: "nearest" });
}

function hideNewKey() {
  $("new-key-value").textContent = "";
  $("new-key-client").textContent = "";
  $("new-key-msg").textContent = "";
  $("new-key").hidden = true;
}

$("new-key-dismiss").addEventListener("click", hideNewKey);
$("new-key-copy").addEventListener("click", async () => {
  const code = $("new-key-value");
  try {
    await navigator.clipboard.writeText(code.textContent);
    $("new-key-msg").textContent = "copied";
  } catch (_) {
    // no clipboard (an insecure origin): select it for Ctrl+C
    const r = document.createRange();
    r.selectNodeContents(code);
    getSelection().removeAllRanges();
    getSelection().addRange(r);
    $("new-key-msg").textContent = "selected: press Ctrl+C";
  }
});

function showClientError(e) {
  if (e.message !== "unauthorized") $("client-error").textContent = e.message;
}

// A change to clients, as the actor "dashboard"; its answer.
function clientChange(path, body) {
  const headers = Object.assign({}, ACTOR);
  const opts = { method: "POST", headers };
  if (body !== undefined) {
    headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  return api(path, opts);
}

// The create form as POST /admin/clients's body (empty fields left out;
// the server checks the values and names a bad one).
function clientForm() {
  const text = (id) => $(id).value.trim();
  const num = (id) => (text(id) === "" ? undefined : Number(text(id)));
  const body = { name: text("client-name") };
  const models = text("client-models").split(",").map((m) => m.trim()).filter(Boolean);
  if (models.length) body.models = models;
  for (const [field, id] of [["rpm", "client-rpm"], ["tpm", "client-tpm"], ["max_concurrent", "client-max-concurrent"]]) {
    if (num(id) !== undefined) body[field] = num(id);
  }
  if (text("client-expires")) body.expires = text("client-expires");
  const quotas = [];
  if (num("client-quota-tokens-day") !== undefined) quotas.push({ per: "day", tokens: num("client-quota-tokens-day") });
  if (num("client-quota-usd-month") !== undefined) quotas.push({ per: "month", usd: num("client-quota-usd-month") });
  if (quotas.length) body.quotas = quotas;
  if (text("client-notes")) body.notes = text("client-notes");
  return body;
}

$("client-create-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const body = clientForm();
  $("client-error").textContent = "";
  $("client-create").disabled = true;
  clientChange("/admin/clients", body).then((r) => {
    $("client-create-form").reset();
    showNewKey((r.client && r.client.name) || body.name, r.key || "");
    refreshClients();
  }, showClientError).finally(() => { $("client-create").disabled = false; });
});

function revokeClient(name) {
  if (!confirm(`Revoke client ${name}? Its key stops working at once.`)) return;
  $("client-error").textContent = "";
  clientChange(`/admin/clients/${encodeURIComponent(name)}/revoke`).then(() => refreshClients(), showClientError);
}

function rotateClient(name) {
  if (!confirm(`Give client ${name} a new key? The old key stops working at once.`)) return;
  $("client-error").textContent = "";
  clientChange(`/admin/clients/${encodeURIComponent(name)}/rotate`).then((r) => {
    showNewKey(name, r.key || "");
    refreshClients();
  }, showClientError);
}

// Cost per day over the last 30 days, one series per client (or model).
const COST_DAYS = 30;

function costSince() {
  const day = 86400e3;
  const start = Math.floor((Date.now() - COST_DAYS * day) / day) * day;
  return new Date(start).toISOString().replace(/\.\d+Z$/, "Z");
}

function renderCost(id, by, body) {
  const step = Number(body.bucket_seconds) > 0 ? Number(body.bucket_seconds) : 86400;
  const points = Array.isArray(body.points) ? body.points : [];
  const now = Date.now() / 1000;
  let since = Date.parse(body.since) / 1000;
  if (!Number.isFinite(since)) since = now - COST_DAYS * 86400;
  const ts = new Set();
  for (let t = Math.floor(since / step) * step; t <= now && ts.size < 400; t += step) ts.add(t);
  for (const p of points) if (Number.isFinite(p.t)) ts.add(p.t);
  const times = [...ts].sort((a, b) => a - b);
  const index = new Map(times.map((t, i) => [t, i]));
  const totals = new Map();
  for (const p of points) {
    const key = unnamed(p.name) ? "" : String(p.name);
    totals.set(key, (totals.get(key) || 0) + (Number(p.cost_usd) || 0));
  }
  // the biggest spender first; the unnamed one last
  const names = [...totals.entries()]
    .sort((a, b) => Number(a[0] === "") - Number(b[0] === "") || b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
    .map(([n]) => n);
  const slot = new Map(names.map((n, i) => [n, i]));
  const named = names.some((n) => n !== "");
  const values = names.map(() => times.map(() => 0));
  for (const p of points) {
    const j = index.get(p.t);
    if (j != null) values[slot.get(unnamed(p.name) ? "" : String(p.name))][j] += Number(p.cost_usd) || 0;
  }
  const total = [...totals.values()].reduce((a, b) => a + b, 0);
  $(id.replace("-chart", "-msg")).className = "dim";
  $(id.replace("-chart", "-msg")).textContent = points.length
    ? `${fmtUsd(total)} in ${COST_DAYS} days, ${names.length} ${by}${names.length === 1 ? "" : "s"}`
    : "no traffic in these days";
  const series = names.map((n, i) => ({
    label: usageLabel(by, n, named), stroke: PALETTE[i % PALETTE.length], width: 1.5,
    value: (u, v) => (v == null ? "—" : fmtUsd(v)),
  }));
  const usdAxis = Object.assign({}, AXIS, { size: 64, values: (u, splits) => splits.map(fmtUsd) });
  chart(id, series, [times].concat(values), { height: 220, opts: { axes: [Object.assign({}, AXIS), usdAxis] } });
}

function refreshCosts() {
  if (needsToken()) return;
  const since = encodeURIComponent(costSince());
  const load = (by) => api(`/admin/usage/series?by=${by}&bucket=day&since=${since}`);
  return latest("costs", () => Promise.all([load("client"), load("model")]), ([c, m]) => {
    renderCost("cost-client-chart", "client", c);
    renderCost("cost-model-chart", "model", m);
  }, (e) => {
    for (const id of ["cost-client-msg", "cost-model-msg"]) {
      $(id).className = "err";
      $(id).textContent = "⚠ " + e.message;
    }
  });
}

function refreshAll() {
  refresh(); refreshTokens(); refreshRequests(); refreshUsageSeries(); refreshCache(); refreshClients(); refreshCosts();
}

// The typed model, else the first the gateway lists.
function playgroundModel() {
  const typed = $("pg-model").value.trim();
  if (typed) return typed;
  const first = $("pg-models").options[0];
  return first ? first.value : "";
}

async function playground() {
  const base = apiBase();
  const out = $("answer");
  out.textContent = "";
  if (!base) { $("pg-status").textContent = "no TCP API listener"; return; }
  const headers = { "content-type": "application/json" };
  const key = $("pg-key").value.trim();
  if (key) headers["authorization"] = "Bearer " + key;
  $("pg-status").textContent = "streaming…";
  const started = performance.now();
  try {
    const res = await fetch(base + "/v1/chat/completions", {
      method: "POST", headers,
      body: JSON.stringify({ model: playgroundModel(), stream: true, messages: [{ role: "user", content: $("pg-prompt").value }] }),
    });
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      $("pg-status").textContent = `${res.status}: ${(body.error && body.error.message) || res.statusText}`;
      return;
    }
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = "", first = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.search(/\r?\n\r?\n/)) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i).replace(/^\r?\n\r?\n/, "");
        for (const line of block.split(/\r?\n/)) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          try {
            const ev = JSON.parse(data);
            if (ev.error) { out.append(el("span", { class: "err" }, "\n[" + (ev.error.message || "error") + "]")); continue; }
            const d = ev.choices && ev.choices[0] && ev.choices[0].delta;
            if (d && d.content) { if (first == null) first = performance.now(); out.append(d.content); }
          } catch (_) { /* a non-JSON event: skip */ }
        }
      }
    }
    const ttft = first == null ? "" : `, first token after ${Math.round(first - started)} ms`;
    $("pg-status").textContent = `done in ${Math.round(performance.now() - started)} ms${ttft}`;
  } catch (e) {
    $("pg-status").textContent = "failed: " + e.message;
  }
}

$("pg-send").addEventListener("click", playground);
// the filters: a choice refreshes at once, typing once it pauses
const typed = debounce(refreshRequests, 400);
for (const id of ["f-status", "f-since", "f-limit"]) $(id).addEventListener("change", refreshRequests);
for (const id of ["f-client", "f-model"]) $(id).addEventListener("input", typed);
$("req-filters").addEventListener("submit", (ev) => { ev.preventDefault(); refreshRequests(); });
for (const id of ["usage-by", "usage-period"]) $(id).addEventListener("change", refreshUsageSeries);
setInterval(refresh, 2000);
setInterval(() => { refreshTokens(); refreshRequests(); refreshCache(); refreshClients(); }, 6000);
setInterval(() => { refreshUsageSeries(); refreshCosts(); }, 30000);
setInterval(tick, 1000);
refreshAll();
