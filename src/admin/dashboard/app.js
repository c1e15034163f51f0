// Switchyard dashboard: polls the admin API, draws with uPlot (embedded), and
// streams the chat playground through the gateway's API listener. Every value
// from the server goes into the page as text (textContent), never as HTML.
"use strict";

const state = { token: sessionStorage.getItem("switchyard-admin-token") || "", status: null, keys: [], charts: {} };
const $ = (id) => document.getElementById(id);

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
  if (res.status === 401) { askToken("The token was not accepted."); throw new Error("unauthorized"); }
  const body = await res.json();
  if (!res.ok) throw new Error((body.error && body.error.message) || res.statusText);
  return body;
}

function askToken(msg) {
  $("login").style.display = "flex";
  $("login-err").textContent = msg || "";
  $("login-token").focus();
}

$("login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  state.token = $("login-token").value.trim();
  sessionStorage.setItem("switchyard-admin-token", state.token);
  $("login").style.display = "none";
  refresh();
});

function fmtSecs(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  return Math.floor(s / 3600) + "h " + Math.floor((s % 3600) / 60) + "m";
}

function card(label, value) {
  return el("div", { class: "card" }, el("b", {}, value), el("span", {}, label));
}

function renderStatus(s) {
  state.status = s;
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
  const sel = $("pg-model");
  if (sel.options.length !== s.models.length) {
    sel.replaceChildren(...s.models.map((m) => el("option", { value: m }, m)));
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
  return api(`/admin/keys/${encodeURIComponent(id)}/${action}`, { method: "POST" }).then(refresh, (e) => showConn(e));
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

function tick() {
  for (const td of document.querySelectorAll("td.countdown")) {
    const until = td.getAttribute("data-until");
    td.textContent = until ? fmtSecs((Number(until) - Date.now()) / 1000) : (td.parentNode.querySelector(".parked") ? "until enabled" : "");
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

function renderTokens(byModel, byClient) {
  const rows = [];
  for (const [by, body] of [["model", byModel], ["client", byClient]]) {
    for (const r of body.rows) {
      rows.push(el("tr", {}, el("td", { class: "dim" }, by), el("td", {}, r[by] || "-"), el("td", { class: "num" }, r.requests),
        el("td", { class: "num" }, r.tokens_in), el("td", { class: "num" }, r.tokens_out), el("td", { class: "num" }, r.errors)));
    }
  }
  $("tokens").tBodies[0].replaceChildren(...rows);
}

function renderRequests(body) {
  $("requests").tBodies[0].replaceChildren(...body.requests.map((r) => el("tr", {},
    el("td", {}, r.time.replace("T", " ").replace("Z", "")),
    el("td", {}, r.client),
    el("td", {}, r.served_model && r.served_model !== r.model ? `${r.model} → ${r.served_model}` : (r.model || "-")),
    el("td", {}, r.upstream),
    el("td", {}, r.key),
    el("td", { class: "num" + (r.status >= 400 ? " err" : "") }, r.status),
    el("td", { class: "num" }, r.attempts),
    el("td", { class: "num" }, r.latency_ms.toFixed(1) + " ms"),
    el("td", { class: "num" }, `${r.tokens_in}/${r.tokens_out}${r.estimated ? "*" : ""}`),
    el("td", { class: "wrap err" }, r.error),
  )));
}

function chart(id, series, data) {
  if (typeof uPlot === "undefined") return;
  const target = $(id);
  const width = Math.max(300, target.clientWidth || 500);
  if (!state.charts[id]) {
    state.charts[id] = new uPlot({
      width, height: 200,
      series: [{}].concat(series),
      axes: [{ stroke: "#8a94a3", grid: { stroke: "#262c35" } }, { stroke: "#8a94a3", grid: { stroke: "#262c35" } }],
      scales: { x: { time: true } },
    }, data, target);
  } else {
    state.charts[id].setData(data);
  }
}

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

let slow = 0;
async function refresh() {
  if (document.body.dataset.auth === "token" && !state.token) { askToken(); return; }
  try {
    const [status, keys, ups, series] = await Promise.all([
      api("/admin/status"), api("/admin/keys"), api("/admin/upstreams"), api("/admin/series?seconds=120"),
    ]);
    renderStatus(status); renderKeys(keys); renderUpstreams(ups); renderSeries(series);
    if (slow++ % 3 === 0) {
      const [m, c, r] = await Promise.all([
        api("/admin/usage?by=model&since=24h"), api("/admin/usage?by=client&since=24h"), api("/admin/requests?limit=25"),
      ]);
      renderTokens(m, c); renderRequests(r);
    }
    showConn(null);
  } catch (e) {
    if (e.message !== "unauthorized") showConn(e);
  }
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
      body: JSON.stringify({ model: $("pg-model").value, stream: true, messages: [{ role: "user", content: $("pg-prompt").value }] }),
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
setInterval(refresh, 2000);
setInterval(tick, 1000);
refresh();
