// The jobvisor dashboard: one ES module, no framework, no build step.
// Pages are drawn from the HTTP API; live parts follow its Server-Sent
// Events. Text from the API only ever enters the page as text nodes.

const $main = document.getElementById("main");
const state = { session: null, streams: [], timers: [] };

// ---------- DOM helpers ----------

/** An element: attributes (on* are listeners), then children (strings are text). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const svgNs = "http://www.w3.org/2000/svg";
function svg(tag, attrs = {}, ...children) {
  const e = document.createElementNS(svgNs, tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) e.setAttribute(k, v);
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

/** Replaces `node`'s children, leaving out the absent ones. */
function put(node, ...children) {
  node.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}

function status(s) {
  return el("span", { class: `status s-${s}`, "data-status": s }, s ?? "—");
}

function link(href, text, attrs = {}) {
  return el("a", { ...attrs, href }, text);
}

// An id as the CLI writes it and takes it: its last 8 hex digits (ids
// made together share their first ones). The whole id is its title.
function short(id) {
  return id ? id.replace(/-/g, "").slice(-8) : "—";
}

function when(t) {
  if (!t) return "—";
  const d = new Date(t);
  return el("time", { datetime: t, title: t }, d.toLocaleString());
}

function ago(t) {
  if (!t) return "—";
  const s = Math.round((Date.now() - new Date(t).getTime()) / 1000);
  if (s < 0) return `in ${fmtSecs(-s)}`;
  return `${fmtSecs(s)} ago`;
}

function fmtSecs(s) {
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d`;
}

// A duration written as the CLI writes one (humantime): "0.25ms",
// "420ms", "1s 500ms", "2m 3s".
function ms(v) {
  if (v === null || v === undefined) return "—";
  if (v < 1) return `${v.toFixed(2)}ms`;
  let left = Math.round(v);
  const parts = [];
  for (const [unit, size] of [["d", 86400000], ["h", 3600000], ["m", 60000], ["s", 1000], ["ms", 1]]) {
    if (left >= size) { parts.push(`${Math.floor(left / size)}${unit}`); left %= size; }
  }
  return parts.join(" ") || "0ms";
}

function table(headers, rows, empty = "Nothing here.") {
  if (!rows.length) return el("p", { class: "muted" }, empty);
  return el("div", { class: "scroll" },
    el("table", {}, el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows)));
}

function card(title, ...children) {
  return el("section", { class: "card" }, title ? el("h2", {}, title) : null, ...children);
}

function toast(text, bad = false) {
  const t = el("div", { class: bad ? "bad" : "" }, text);
  document.getElementById("toast").append(t);
  setTimeout(() => t.remove(), bad ? 8000 : 4000);
}

// ---------- API ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", body } = {}) {
  const headers = {};
  if (method !== "GET") {
    headers["Content-Type"] = "application/json";
    if (state.session?.csrf) headers["X-CSRF-Token"] = state.session.csrf;
  }
  const r = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = text; }
  if (!r.ok) {
    const e = data?.error ?? {};
    if (r.status === 401) showLogin();
    throw new ApiError(r.status, e.code ?? "error", e.message ?? `${r.status}`);
  }
  return data;
}

/** Runs an action, telling how it went. */
async function act(what, fn) {
  try {
    const out = await fn();
    toast(`${what}: done`);
    return out;
  } catch (e) {
    toast(`${what}: ${e.message}`, true);
    return null;
  }
}

/** Follows a Server-Sent Events route until the page changes. */
function follow(path, handlers) {
  const es = new EventSource(path, { withCredentials: true });
  for (const [event, fn] of Object.entries(handlers)) {
    es.addEventListener(event, (m) => {
      let data = m.data;
      try { data = JSON.parse(m.data); } catch { /* plain text */ }
      fn(data, m);
    });
  }
  state.streams.push(es);
  return es;
}

function every(msecs, fn) {
  state.timers.push(setInterval(fn, msecs));
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== "" && v !== null && v !== undefined) q.set(k, v);
  const s = q.toString();
  return s ? `?${s}` : "";
}

// ---------- session ----------

async function loadSession() {
  const r = await fetch("/ui/session", { credentials: "same-origin" });
  state.session = await r.json();
  const who = document.getElementById("who");
  who.replaceChildren();
  if (state.session.auth && state.session.role) {
    who.append(el("span", { class: "badge", id: "role" }, state.session.role === "read" ? "read-only" : "full access"),
      el("button", { type: "button", onclick: logout }, "Log out"));
  } else if (!state.session.auth) {
    who.append(el("span", { class: "badge" }, "loopback, no token"));
  }
}

async function logout() {
  await fetch("/ui/logout", { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json", "X-CSRF-Token": state.session?.csrf ?? "" } });
  location.hash = "#/";
  location.reload();
}

function showLogin() {
  stop();
  const t = document.getElementById("login").content.cloneNode(true);
  $main.replaceChildren(t);
  if (new URLSearchParams(location.search).get("login") === "failed") {
    document.getElementById("login-failed").hidden = false;
  }
  document.getElementById("token")?.focus();
}

// ---------- router ----------

function stop() {
  for (const s of state.streams) s.close();
  for (const t of state.timers) clearInterval(t);
  state.streams = [];
  state.timers = [];
}

const routes = [
  [/^#?\/?$/, overview],
  [/^#\/executions$/, executions],
  [/^#\/executions\/([0-9a-f-]{36})$/, execution],
  [/^#\/jobs$/, jobs],
  [/^#\/jobs\/new$/, (q) => jobForm(null, q)],
  [/^#\/jobs\/([^/]+)\/edit$/, (name, q) => jobForm(decodeURIComponent(name), q)],
  [/^#\/jobs\/([^/]+)$/, (name) => jobPage(decodeURIComponent(name))],
  [/^#\/workflows$/, workflows],
  [/^#\/workflows\/([0-9a-f-]{36})$/, workflow],
  [/^#\/handlers$/, handlers],
];

async function render() {
  stop();
  const [hash, search = ""] = location.hash.split("?");
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href");
    const current = target === "#/" ? hash === "" || hash === "#/" : hash.startsWith(target);
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (state.session?.auth && !state.session.role) return showLogin();
  for (const [re, page] of routes) {
    const m = hash.match(re);
    if (m) {
      $main.replaceChildren(el("p", { class: "muted" }, "Loading…"));
      try {
        await page(...m.slice(1), new URLSearchParams(search));
      } catch (e) {
        if (e.status !== 401) $main.replaceChildren(card("Error", el("p", { class: "error" }, e.message)));
      }
      return;
    }
  }
  $main.replaceChildren(card("Not found", el("p", {}, "No such page. "), link("#/", "Overview")));
}

window.addEventListener("hashchange", render);

// ---------- overview ----------

async function overview() {
  const page = el("div", {});
  const nodes = el("div", {}), queues = el("div", {}), attention = el("div", {}), charts = el("div", {});
  page.append(el("h1", {}, "Overview"),
    el("div", { class: "grid" }, card("Nodes", nodes), card("Queues", queues)),
    card("Needs attention", attention), card("The last hour", charts));
  $main.replaceChildren(page);
  let handler = "";
  const draw = async () => {
    const [n, q, a, t] = await Promise.all([api("/v1/nodes"), api("/v1/queues"), api("/v1/attention"), api("/v1/timeline?since=1h")]);
    // A node id is its host and 32 hex digits: the host has its column, the
    // id its last 8 digits (whole on hover), so that the row fits.
    nodes.replaceChildren(table(["Node", "Host", "PID", "Runs at once", "Started", "Last heartbeat", ""], n.map((x) => el("tr", { "data-node": x.id },
      el("td", { class: "mono", title: x.id }, `…${x.id.slice(-8)}`), el("td", {}, x.hostname), el("td", {}, x.pid),
      el("td", { class: "concurrency" }, x.concurrency ?? "—"), el("td", {}, when(x.started_at)),
      el("td", { title: x.heartbeat_at, class: "heartbeat" }, ago(x.heartbeat_at)),
      el("td", {}, x.stopped_at ? el("span", { class: "muted" }, "stopped") : x.live ? el("span", { class: "s-succeeded" }, "live") : el("span", { class: "s-failed" }, "silent")))), "No node has run in the last day."));
    queues.replaceChildren(table(["Queue", "Pending", "Running", "Limit", "Key limit", "Rate", ""], q.map((x) => el("tr", { "data-queue": x.name },
      el("td", {}, link(`#/executions?queue=${encodeURIComponent(x.name)}`, x.name)), el("td", {}, x.pending), el("td", {}, x.running),
      el("td", {}, x.max_running ?? "—"), el("td", {}, x.key_limit ?? "—"),
      el("td", {}, x.rate ? `${x.rate} (${x.tokens} now)` : "—"),
      el("td", {}, el("button", { type: "button", onclick: () => act(`${x.paused ? "Resume" : "Pause"} ${x.name}`,
        () => api(`/v1/queues/${encodeURIComponent(x.name)}/${x.paused ? "resume" : "pause"}`, { method: "POST" })).then(draw) },
        x.paused ? "Resume" : "Pause"), x.paused ? el("span", { class: "badge" }, " paused") : null))), "No queue yet."));
    attention.replaceChildren(attentionPanel(a));
    const handlers = [...new Set(t.map((r) => r.handler))].sort();
    const pick = el("select", { id: "chart-handler", "aria-label": "Handler", onchange: (e) => { handler = e.target.value; charts.replaceChildren(pick, chartsOf(t, handler)); } },
      el("option", { value: "" }, "All handlers"), handlers.map((h) => el("option", { value: h, selected: h === handler }, h)));
    charts.replaceChildren(pick, chartsOf(t, handler));
  };
  await draw();
  let pending = false;
  follow("/v1/events", { state: () => { pending = true; } });
  every(3000, () => { if (pending) { pending = false; draw().catch(() => {}); } });
  every(15000, () => draw().catch(() => {}));
}

function attentionPanel(a) {
  const rows = [];
  for (const i of a.alerts ?? []) rows.push(el("tr", { class: "alert" }, el("td", {}, el("span", { class: "status s-failed" }, i.kind)),
    el("td", {}, i.kind === "execution.stuck" ? link(`#/executions/${i.subject}`, short(i.subject)) : link(`#/jobs/${encodeURIComponent(i.subject)}`, i.subject)),
    el("td", {}, i.job ?? ""), el("td", { class: "wrap" }, `${i.message} (since ${ago(i.opened_at)})`)));
  for (const e of a.stuck) rows.push(el("tr", {}, el("td", {}, el("span", { class: "status s-failed" }, "stuck")),
    el("td", {}, link(`#/executions/${e.id}`, short(e.id))), el("td", {}, e.job ?? e.handler), el("td", { class: "wrap" }, `running since ${new Date(e.started_at).toLocaleString()} on ${e.node ?? "?"}`)));
  for (const e of a.failed) rows.push(el("tr", {}, el("td", {}, status("failed")),
    el("td", {}, link(`#/executions/${e.id}`, short(e.id))), el("td", {}, e.job ?? e.handler), el("td", { class: "wrap" }, e.error ?? "")));
  for (const j of a.late) rows.push(el("tr", {}, el("td", {}, el("span", { class: "status s-pending" }, "late")),
    el("td", {}, j.name), el("td", {}, "job"), el("td", {}, `due ${ago(j.next_run_at)} (${fmtSecs(Math.round(j.late_ms / 1000))} late)`)));
  return table(["", "What", "Job or handler", "Why"], rows, "No alert open, and nothing stuck, failed in the last hour, or late.");
}

/** Throughput (stacked bars per minute) and mean duration (a line). */
function chartsOf(rows, handler) {
  const now = Math.floor(Date.now() / 60000);
  const minutes = Array.from({ length: 60 }, (_, i) => now - 59 + i);
  const by = new Map(minutes.map((m) => [m, { succeeded: 0, failed: 0, other: 0, dur: 0, n: 0 }]));
  for (const r of rows) {
    if (handler && r.handler !== handler) continue;
    const b = by.get(Math.floor(new Date(r.minute).getTime() / 60000));
    if (!b) continue;
    const k = r.status === "succeeded" || r.status === "failed" ? r.status : "other";
    b[k] += r.count;
    if (r.avg_ms !== null) { b.dur += r.avg_ms * r.count; b.n += r.count; }
  }
  const W = 600, H = 160, pad = 28, bw = (W - pad) / 60;
  const max = Math.max(1, ...[...by.values()].map((b) => b.succeeded + b.failed + b.other));
  const bars = svg("g", {});
  minutes.forEach((m, i) => {
    const b = by.get(m);
    let y = H - 16;
    for (const [k, color] of [["succeeded", "var(--ok)"], ["failed", "var(--bad)"], ["other", "var(--idle)"]]) {
      const h = (b[k] / max) * (H - 30);
      if (h > 0) {
        bars.append(svg("rect", { x: pad + i * bw + 1, y: y - h, width: Math.max(1, bw - 2), height: h, fill: color },
          svg("title", {}, `${new Date(m * 60000).toLocaleTimeString()}: ${b[k]} ${k}`)));
        y -= h;
      }
    }
  });
  const throughput = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Executions ended per minute" },
    svg("text", { x: 0, y: 12 }, String(max)), svg("text", { x: 0, y: H - 18 }, "0"),
    svg("line", { x1: pad, y1: H - 16, x2: W, y2: H - 16, stroke: "var(--line)" }), bars,
    svg("text", { x: pad, y: H - 2 }, "-60 min"), svg("text", { x: W - 30, y: H - 2 }, "now"));
  const durs = minutes.map((m) => { const b = by.get(m); return b.n ? b.dur / b.n : null; });
  const dmax = Math.max(1, ...durs.filter((d) => d !== null));
  const pts = durs.map((d, i) => d === null ? null : `${pad + i * bw + bw / 2},${H - 16 - (d / dmax) * (H - 30)}`).filter(Boolean);
  const duration = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Mean duration per minute" },
    svg("text", { x: 0, y: 12 }, ms(dmax)), svg("line", { x1: pad, y1: H - 16, x2: W, y2: H - 16, stroke: "var(--line)" }),
    svg("polyline", { points: pts.join(" "), fill: "none", stroke: "var(--accent)", "stroke-width": 2 }),
    pts.map((p) => { const [x, y] = p.split(","); return svg("circle", { cx: x, cy: y, r: 2.5, fill: "var(--accent)" }); }));
  const total = [...by.values()].reduce((a, b) => ({ s: a.s + b.succeeded, f: a.f + b.failed }), { s: 0, f: 0 });
  return el("div", { class: "grid" },
    el("div", { class: "chart", id: "chart-throughput" }, el("h3", {}, "Throughput"),
      el("div", { class: "legend" }, el("span", {}, el("i", { class: "sw-ok" }), `succeeded ${total.s}`), el("span", {}, el("i", { class: "sw-bad" }), `failed ${total.f}`)),
      throughput),
    el("div", { class: "chart", id: "chart-duration" }, el("h3", {}, "Mean duration"), duration));
}

// ---------- executions ----------

const STATUSES = ["waiting", "pending", "held", "running", "succeeded", "failed", "cancelled", "snoozed", "skipped"];
const FILTERS = ["job", "handler", "queue", "node", "unique_key", "concurrency_key", "since", "until", "tag", "meta", "origin"];
const HINTS = { since: "1h or a time", until: "now or a time", tag: "a,b", meta: "key:value", origin: "manual, scheduled, retry…" };

// A list's filters as a bulk action's body: tags as a list, meta as an object.
function bulkFilter(filter) {
  const out = { ...filter };
  if (out.tag) { out.tags = out.tag.split(","); delete out.tag; }
  if (out.meta) { const [k, ...v] = out.meta.split(":"); out.meta = { [k]: v.join(":") }; }
  return out;
}

async function executions(params) {
  const form = el("form", { class: "filters", id: "filters", onsubmit: (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    const st = [...form.querySelectorAll("input[name=status]:checked")].map((i) => i.value);
    if (st.length) p.set("status", st.join(","));
    for (const f of FILTERS) { const v = form.elements[f].value.trim(); if (v) p.set(f, v); }
    location.hash = `#/executions${p.toString() ? "?" + p : ""}`;
  } });
  const chosen = (params.get("status") ?? "").split(",").filter(Boolean);
  form.append(el("fieldset", {}, el("legend", {}, "Status"),
    STATUSES.map((s) => el("label", {}, el("input", { type: "checkbox", name: "status", value: s, checked: chosen.includes(s) }), s))));
  for (const f of FILTERS) {
    form.append(el("div", {}, el("label", { for: `f-${f}` }, f.replace("_", " ")),
      el("input", { id: `f-${f}`, name: f, value: params.get(f) ?? "", placeholder: HINTS[f] ?? "" })));
  }
  form.append(el("div", {}, el("button", { class: "primary", type: "submit" }, "Filter")));
  const filter = {};
  if (chosen.length) filter.status = chosen;
  for (const f of FILTERS) if (params.get(f)) filter[f] = params.get(f);
  const narrowed = Object.keys(filter).length > 0;
  const bulk = el("div", { class: "actions" },
    el("button", { type: "button", id: "bulk-retry", disabled: !narrowed, onclick: () => {
      if (confirm("Retry every execution this filter matches that can be retried?"))
        act("Retry", () => api("/v1/executions/retry", { method: "POST", body: bulkFilter(filter) })).then((r) => { if (r) { toast(`${r.retried} retried of ${r.matched}`); load(true); } });
    } }, "Retry all matching"),
    el("button", { type: "button", class: "danger", id: "bulk-cancel", disabled: !narrowed, onclick: () => {
      if (confirm("Cancel every execution this filter matches that has not ended?"))
        act("Cancel", () => api("/v1/executions/cancel", { method: "POST", body: bulkFilter(filter) })).then((r) => { if (r) { toast(`${r.cancelled} cancelled, ${r.requested} asked to stop, of ${r.matched}`); load(true); } });
    } }, "Cancel all matching"),
    narrowed ? null : el("span", { class: "muted" }, "Filter first to act in bulk."));
  const tbody = el("tbody", { id: "exec-rows" });
  const more = el("button", { type: "button", id: "older" }, "Older");
  const fresh = el("p", { class: "muted", id: "fresh" });
  put($main, el("h1", {}, "Executions"), card(null, form, bulk), fresh,
    card(null, el("div", { class: "scroll" }, el("table", {}, el("thead", {}, el("tr", {},
      ["Id", "Status", "Job or handler", "Queue", "Attempt", "Origin", "Enqueued", "Duration", "Node"].map((h) => el("th", { scope: "col" }, h)))), tbody)),
    el("div", { class: "actions" }, more)));
  let last = null;
  const base = {};
  if (chosen.length) base.status = chosen.join(",");
  for (const f of FILTERS) if (params.get(f)) base[f] = params.get(f);
  const row = (e) => el("tr", { "data-id": e.id },
    el("td", { class: "mono" }, link(`#/executions/${e.id}`, short(e.id))), el("td", {}, status(e.status)),
    el("td", {}, e.job ?? e.handler), el("td", {}, e.queue), el("td", {}, `${e.attempt}/${Math.max(e.max_attempts, e.attempt + (e.next_id ? 1 : 0))}`),
    el("td", {}, e.origin), el("td", {}, when(e.enqueued_at)), el("td", {}, ms(e.duration_ms)), el("td", { class: "mono" }, e.node ?? "—"));
  const load = async (reset = false) => {
    if (reset) { tbody.replaceChildren(); last = null; fresh.textContent = ""; }
    const page = await api(`/v1/executions${query({ ...base, before: last, limit: 50 })}`);
    for (const e of page) tbody.append(row(e));
    last = page.length ? page[page.length - 1].id : last;
    more.disabled = page.length < 50;
    if (!tbody.children.length) tbody.append(el("tr", {}, el("td", { colspan: 9, class: "muted" }, "No execution matches.")));
  };
  more.addEventListener("click", () => load());
  await load(true);
  // Live: rows on the page change as their executions do; new ones are counted.
  let added = 0;
  follow("/v1/events", { state: async (ev) => {
    const tr = tbody.querySelector(`tr[data-id="${ev.id}"]`);
    if (tr) {
      try { tr.replaceWith(row(await api(`/v1/executions/${ev.id}`))); } catch { /* gone */ }
    } else if (ev.status === "running" || ev.retry) {
      added += 1;
      fresh.replaceChildren(`${added} new or changed since loaded — `, el("a", { href: location.hash, onclick: (e) => { e.preventDefault(); added = 0; load(true); } }, "refresh"));
    }
  } });
}

// ---------- one execution ----------

const LEVELS = ["trace", "debug", "info", "warn", "error", "fatal", "panic"];
const PAGE = 500, KEEP = 5000;

async function execution(id) {
  const e = await api(`/v1/executions/${id}`);
  const bar = el("span", {}), barText = el("span", { class: "muted", id: "progress-text" });
  const barData = el("pre", { id: "progress-data", hidden: true });
  const head = el("div", {});
  const drawHead = (x) => {
    put(head, el("h1", { title: x.id }, `Execution ${short(x.id)} `, status(x.status)),
      el("div", { class: "actions" },
        el("button", { type: "button", id: "cancel", class: "danger", disabled: ["succeeded", "failed", "cancelled", "snoozed", "skipped"].includes(x.status),
          onclick: () => act("Cancel", () => api(`/v1/executions/${x.id}/cancel`, { method: "POST", body: { reason: "cancelled from the dashboard" } })) }, "Cancel"),
        el("button", { type: "button", id: "retry", disabled: !["failed", "cancelled"].includes(x.status) && !x.interrupted,
          onclick: () => act("Retry", () => api(`/v1/executions/${x.id}/retry`, { method: "POST" })).then((r) => { if (r) location.hash = `#/executions/${r.id}`; }) }, "Retry"),
        x.status === "held"
          ? el("button", { type: "button", id: "release", onclick: () => hold("Release", "release") }, "Release")
          : el("button", { type: "button", id: "hold", disabled: !["pending", "waiting"].includes(x.status), onclick: () => hold("Hold", "hold") }, "Hold")));
  };
  // Held and released runs send no event: the page reads the run again.
  const hold = (what, verb) => act(what, () => api(`/v1/executions/${id}/${verb}`, { method: "POST" }))
    .then(async (r) => { if (r) { const x = await api(`/v1/executions/${id}`); drawHead(x); fill(x); } });
  drawHead(e);
  const p = e.progress;
  const setProgress = (pr) => {
    const pct = pr.percent ?? (pr.total ? (100 * (pr.done ?? 0)) / pr.total : null);
    bar.style.width = `${pct ?? 0}%`;
    bar.parentElement?.setAttribute("aria-valuenow", String(Math.round(pct ?? 0)));
    barText.textContent = [pct !== null ? `${pct.toFixed(0)}%` : null, pr.done !== null && pr.total !== null ? `${pr.done}/${pr.total}` : null, pr.message].filter(Boolean).join(" · ");
    barData.hidden = !pr.data;
    barData.textContent = pr.data ? JSON.stringify(pr.data, null, 2) : "";
  };
  const progress = el("div", { class: "bar", role: "progressbar", id: "progress", "aria-valuemin": "0", "aria-valuemax": "100", "aria-label": "Progress" }, bar);
  const details = el("dl", { class: "kv" });
  const fill = (x) => {
    const rows = [["Job", x.job ?? "— (ad hoc)"], ["Handler", x.handler], ["Mode", x.mode], ["Queue", x.queue],
      ["Attempt", `${x.attempt} of ${Math.max(x.max_attempts, x.attempt + (x.next_id ? 1 : 0))}`], ["Enqueued", when(x.enqueued_at)],
      ...(["pending", "waiting", "held"].includes(x.status) ? [["Due at", when(x.run_at)]] : []), ["Started", when(x.started_at)],
      ["Finished", when(x.finished_at)], ["Duration", ms(x.duration_ms)], ["Node", x.node ?? "—"], ["PID", x.pid ?? "—"],
      ["Exit", x.exit_code ?? x.signal ?? "—"], ["Unique key", x.unique_key ?? "—"], ["Concurrency key", x.concurrency_key ?? "—"],
      ["Cancel", x.cancel_requested_at ? `${x.cancel_outcome ?? "requested"}: ${x.cancel_reason ?? ""}` : "—"],
      ["Origin", x.origin],
      ["Tags", x.tags.length ? el("span", { id: "tags" }, x.tags.map((t) => link(`#/executions?tag=${encodeURIComponent(t)}`, t, { class: "tag" }))) : "—"],
      ["Meta", Object.keys(x.meta).length ? el("span", { id: "meta" }, Object.entries(x.meta).map(([k, v]) =>
        link(`#/executions?meta=${encodeURIComponent(`${k}:${v}`)}`, `${k}=${v}`, { class: "tag" }))) : "—"]];
    details.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));
  };
  fill(e);
  const chain = el("div", { id: "chain" });
  const links = el("div", {});
  const out = el("div", { id: "outcome" });
  const drawOut = (x) => put(out,
    x.error ? el("div", {}, el("h3", {}, "Error"), el("pre", { class: "error", id: "error" }, x.error)) : null,
    x.output !== null && x.output !== undefined ? el("div", {}, el("h3", {}, "Output"), el("pre", { id: "output" }, JSON.stringify(x.output, null, 2))) : null,
    el("h3", {}, "Payload"), el("pre", {}, JSON.stringify(x.payload, null, 2)));
  drawOut(e);
  const logBox = el("div", { class: "logs", id: "logs", tabindex: "0", "aria-label": "Log lines" });
  const level = el("select", { id: "log-level", "aria-label": "Lowest level" }, el("option", { value: "" }, "all levels"), LEVELS.map((l) => el("option", { value: l }, `${l} and above`)));
  const search = el("input", { id: "log-search", type: "search", placeholder: "Search messages", "aria-label": "Search log messages" });
  const followBox = el("input", { id: "log-follow", type: "checkbox", checked: true });
  const older = el("button", { type: "button", id: "log-older" }, "Older lines");
  const count = el("span", { class: "muted", id: "log-count" });
  $main.replaceChildren(head,
    card("Progress", progress, barText, barData),
    el("div", { class: "grid" }, card("Details", details), card("Attempts and links", chain, links)),
    card("Log", el("div", { class: "actions" }, level, search, el("label", {}, followBox, " follow"), older, count), logBox),
    card(null, out));
  setProgress(p);
  drawChain(e, chain, links);

  // The log viewer: the tail first, older pages on demand, new lines as
  // they come; at most KEEP lines in the page, so a long log never
  // freezes it.
  let first = null, lastSeq = 0, stream = null;
  const line = (l) => el("div", { class: `line lv-${l.level}`, "data-seq": l.seq },
    el("span", { class: "muted" }, l.seq), el("span", { class: "ts muted" }, new Date(l.ts).toLocaleTimeString()),
    el("span", { class: "stream" }, l.level), el("span", { class: "msg" }, l.message),
    l.fields ? el("span", { class: "fields mono" }, JSON.stringify(l.fields)) : null);
  const trim = (fromTop) => {
    while (logBox.children.length > KEEP) {
      (fromTop ? logBox.firstElementChild : logBox.lastElementChild).remove();
    }
    first = Number(logBox.firstElementChild?.dataset.seq ?? first);
  };
  const shown = () => { count.textContent = `${logBox.children.length} lines shown${lastSeq ? `, last #${lastSeq}` : ""}`; };
  const params = () => ({ level: level.value, q: search.value });
  const openStream = () => {
    stream?.close();
    stream = follow(`/v1/executions/${id}/stream${query({ after_seq: lastSeq, level: level.value })}`, {
      log: (l) => {
        if (search.value && !l.message.includes(search.value)) { lastSeq = l.seq; return; }
        const atBottom = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 30;
        logBox.append(line(l));
        lastSeq = l.seq;
        trim(true);
        if (followBox.checked && atBottom) logBox.scrollTop = logBox.scrollHeight;
        shown();
      },
      progress: (pr) => setProgress(pr),
      end: (x) => { drawHead(x); fill(x); drawOut(x); setProgress(x.progress); drawChain(x, chain, links); stream.close(); },
    });
  };
  const reload = async () => {
    const tail = await api(`/v1/executions/${id}/logs${query({ ...params(), from_end: "true", limit: PAGE })}`);
    logBox.replaceChildren(...tail.map(line));
    first = tail.length ? tail[0].seq : null;
    lastSeq = tail.length ? tail[tail.length - 1].seq : 0;
    older.disabled = tail.length < PAGE;
    logBox.scrollTop = logBox.scrollHeight;
    shown();
    openStream();
  };
  older.addEventListener("click", async () => {
    if (first === null) return;
    const page = await api(`/v1/executions/${id}/logs${query({ ...params(), from_end: "true", limit: PAGE, before_seq: first })}`);
    const h = logBox.scrollHeight;
    logBox.prepend(...page.map(line));
    followBox.checked = false;
    while (logBox.children.length > KEEP) logBox.lastElementChild.remove();
    first = page.length ? page[0].seq : first;
    older.disabled = page.length < PAGE;
    logBox.scrollTop += logBox.scrollHeight - h;
    shown();
  });
  level.addEventListener("change", reload);
  let typing = null;
  search.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(reload, 300); });
  await reload();
}

async function drawChain(e, chain, links) {
  // The attempts: walk back to the first, then forward to the last.
  const attempts = [e];
  let cur = e;
  for (let i = 0; i < 20 && cur.previous_id; i++) { cur = await api(`/v1/executions/${cur.previous_id}`); attempts.unshift(cur); }
  cur = e;
  for (let i = 0; i < 20 && cur.next_id; i++) { cur = await api(`/v1/executions/${cur.next_id}`); attempts.push(cur); }
  chain.replaceChildren(el("h3", {}, "Attempts"), el("ol", {}, attempts.map((a) => el("li", {},
    a.id === e.id ? el("strong", {}, short(a.id)) : link(`#/executions/${a.id}`, short(a.id)), " ", status(a.status), a.error ? ` ${a.error.slice(0, 80)}` : ""))));
  const list = (ids) => ids.length ? el("ul", {}, ids.map((i) => el("li", {}, link(`#/executions/${i}`, short(i))))) : el("p", { class: "muted" }, "none");
  put(links, el("h3", {}, "Parents"), list(e.parents ?? []), el("h3", {}, "Children"), list(e.children ?? []),
    e.workflow_id ? el("p", {}, "Step ", el("strong", {}, e.step), " of ", link(`#/workflows/${e.workflow_id}`, "its workflow")) : null);
}

// ---------- jobs ----------

function schedule(s) {
  switch (s.kind) {
    case "cron": return `cron ${s.expr}${s.tz && s.tz !== "UTC" ? ` (${s.tz})` : ""}`;
    case "interval": return `every ${fmtSecs(Math.round(s.every_ms / 1000))}`;
    case "once": return `once at ${new Date(s.at / 1000).toLocaleString()}`;
    default: return s.kind;
  }
}

function sparkline(execs) {
  const W = 120, H = 22, n = execs.length;
  if (!n) return el("span", { class: "muted" }, "no runs");
  const w = W / 30;
  const s = svg("svg", { width: W, height: H, class: "spark", role: "img", "aria-label": `last ${n} runs` });
  execs.slice().reverse().forEach((x, i) => {
    const color = x.status === "succeeded" ? "var(--ok)" : x.status === "failed" ? "var(--bad)" : x.status === "running" ? "var(--run)" : "var(--idle)";
    s.append(svg("rect", { x: i * w, y: x.status === "failed" ? 0 : 6, width: Math.max(1, w - 1), height: x.status === "failed" ? H : H - 6, fill: color },
      svg("title", {}, `${x.status} ${x.enqueued_at}`)));
  });
  return s;
}

async function jobs() {
  const all = await api("/v1/jobs");
  const tbody = el("tbody", {});
  $main.replaceChildren(el("h1", {}, "Jobs"),
    el("div", { class: "actions" }, link("#/jobs/new", "New job", { class: "button primary", id: "new-job" })),
    card(null, all.length ? el("div", { class: "scroll" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Job", "Schedule", "Next runs", "Last outcome", "History", ""].map((h) => el("th", { scope: "col" }, h)))), tbody))
    : el("p", { class: "muted" }, "No job yet: add one with `jobvisor job add`.")));
  for (const j of all.slice(0, 200)) {
    const next = el("td", {}, "…"), lastOut = el("td", {}, "…"), hist = el("td", {}, "…");
    const tr = el("tr", { "data-job": j.name },
      el("td", {}, link(`#/jobs/${encodeURIComponent(j.name)}`, j.name), j.paused ? el("span", { class: "badge" }, " paused") : null,
        j.description ? el("div", { class: "muted" }, j.description) : null),
      el("td", {}, schedule(j.schedule)), next, lastOut, hist,
      el("td", {}, el("div", { class: "actions" },
        el("button", { type: "button", onclick: () => act(`Trigger ${j.name}`, () => api(`/v1/jobs/${encodeURIComponent(j.name)}/trigger`, { method: "POST" })) }, "Trigger"),
        el("button", { type: "button", onclick: () => act(`${j.paused ? "Resume" : "Pause"} ${j.name}`, () => api(`/v1/jobs/${encodeURIComponent(j.name)}/${j.paused ? "resume" : "pause"}`, { method: "POST" })).then(() => jobs()) }, j.paused ? "Resume" : "Pause"))));
    tbody.append(tr);
    Promise.all([api(`/v1/jobs/${encodeURIComponent(j.name)}/next?count=5`), api(`/v1/executions?job=${encodeURIComponent(j.name)}&limit=30`)]).then(([n, h]) => {
      next.replaceChildren(n.length ? el("ol", { class: "mono" }, n.map((t) => el("li", {}, when(t)))) : el("span", { class: "muted" }, j.completed_at ? "complete" : "—"));
      const done = h.find((x) => ["succeeded", "failed", "cancelled"].includes(x.status));
      put(lastOut, done ? status(done.status) : el("span", { class: "muted" }, "—"), done ? el("div", { class: "muted" }, ago(done.finished_at)) : null);
      hist.replaceChildren(sparkline(h));
    }).catch(() => {});
  }
}

// A duration in milliseconds as the API writes one: a number of at most six
// digits and the largest unit that holds it exactly.
function durationText(msv) {
  for (const [unit, size] of [["w", 604800000], ["d", 86400000], ["h", 3600000], ["m", 60000], ["s", 1000], ["ms", 1]]) {
    if (msv % size === 0 && msv / size <= 999999) return `${msv / size}${unit}`;
  }
  return `${Math.round(msv / 1000)}s`;
}

const iso = (micros) => (micros === null || micros === undefined ? undefined : new Date(micros / 1000).toISOString());

// What PUT /v1/jobs/{name} takes to leave job `j` as it is: the form
// changes only the fields it shows.
function bodyOf(j) {
  const b = { name: j.name, handler: j.handler, payload: j.payload, mode: j.mode ?? undefined, priority: j.priority,
    queue: j.queue, retries: j.retries, paused: j.paused, overlap: j.overlap, misfire: j.misfire,
    max_parallel: j.max_parallel ?? undefined, max_runs: j.max_runs ?? undefined, concurrency_key: j.concurrency_key ?? undefined,
    description: j.description ?? undefined, meta: j.meta ?? undefined, tags: j.tags ?? undefined,
    condition: j.condition ?? undefined, keep_last: j.keep_last ?? undefined,
    backoff: durationText(j.backoff_ms), timeout: j.timeout_ms ? durationText(j.timeout_ms) : undefined,
    start: iso(j.start_at), end: iso(j.end_at) };
  if (j.then?.length) { b.then = j.then.map((c) => c.job); b.then_on = j.then.map((c) => c.on); }
  const s = j.schedule;
  if (s.kind === "cron") { b.cron = s.expr; b.tz = s.tz; }
  else if (s.kind === "interval") b.every = durationText(s.every_ms);
  else if (s.kind === "once") b.at = iso(s.at);
  else if (s.kind === "daemon") b.daemon = true;
  return b;
}

async function jobPage(name) {
  const j = await api(`/v1/jobs/${encodeURIComponent(name)}`);
  const path = `/v1/jobs/${encodeURIComponent(name)}`;
  const owned = j.declared ? el("p", { class: "muted", id: "declared" }, "Declared in the configuration file, which owns it: change it there.") : null;
  put($main, el("h1", {}, `Job ${j.name} `, j.paused ? el("span", { class: "badge" }, "paused") : null),
    el("div", { class: "actions" },
      el("button", { type: "button", id: "job-trigger", onclick: () => act("Trigger", () => api(`${path}/trigger`, { method: "POST" })).then((r) => { if (r) location.hash = `#/executions/${r.id}`; }) }, "Trigger"),
      el("button", { type: "button", id: "job-pause", onclick: () => act(j.paused ? "Resume" : "Pause", () => api(`${path}/${j.paused ? "resume" : "pause"}`, { method: "POST" })).then(() => jobPage(name)) }, j.paused ? "Resume" : "Pause"),
      el("button", { type: "button", id: "job-edit", disabled: j.declared, onclick: () => { location.hash = `#/jobs/${encodeURIComponent(name)}/edit`; } }, "Edit"),
      el("button", { type: "button", id: "job-delete", class: "danger", disabled: j.declared, onclick: () => {
        if (confirm(`Delete job ${name}? Its history stays.`))
          act("Delete", () => api(path, { method: "DELETE" })).then((r) => { if (r !== null) location.hash = "#/jobs"; });
      } }, "Delete"),
      link(`#/executions?job=${encodeURIComponent(name)}`, "Its executions")),
    owned,
    card("Definition", el("dl", { class: "kv", id: "job-details" }, [
      ["Description", j.description ?? "—"], ["Handler", `${j.handler} (${j.mode ?? "its default"})`], ["Schedule", schedule(j.schedule)],
      ["Condition", j.condition ?? "—"], ["Queue", j.queue], ["Retries", j.retries], ["Payload", JSON.stringify(j.payload)],
      ["Tags", j.tags?.length ? j.tags.join(", ") : "—"], ["Meta", j.meta ? Object.entries(j.meta).map(([k, v]) => `${k}=${v}`).join(", ") : "—"],
      ["Runs", `${j.runs} (missed ${j.missed})`]].flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]))),
    card("Next runs", j.next_runs.length ? el("ol", { class: "mono", id: "job-next" }, j.next_runs.map((t) => el("li", {}, zoned(t, j.schedule.tz)))) : el("p", { class: "muted" }, "None.")));
}

// A time in zone `tz` (if given) and in UTC.
function zoned(t, tz) {
  const d = new Date(t);
  const local = tz ? d.toLocaleString(undefined, { timeZone: tz, timeZoneName: "short" }) : null;
  return local ? `${local} · ${t}` : t;
}

const KINDS = [["cron", "Cron"], ["every", "Every"], ["at", "Once at"], ["daemon", "Daemon"]];

async function jobForm(name, _q) {
  const [handlers, job] = await Promise.all([api("/v1/handlers"), name ? api(`/v1/jobs/${encodeURIComponent(name)}`) : null]);
  const base = job ? bodyOf(job) : {};
  const kind0 = base.cron !== undefined ? "cron" : base.every ? "every" : base.at ? "at" : base.daemon ? "daemon" : "cron";
  const field = (id, label, input, hint) => el("div", { class: `field f-${id}` }, el("label", { for: `j-${id}` }, label), input, hint ? el("small", { class: "muted" }, hint) : null);
  const input = (id, value, attrs = {}) => el("input", { id: `j-${id}`, name: id, value: value ?? "", ...attrs });
  const names = handlers.map((h) => h.name);
  const f = {
    name: input("name", base.name, { required: true, readonly: !!job, autocomplete: "off" }),
    handler: el("select", { id: "j-handler", name: "handler" }, names.map((n) => el("option", { value: n, selected: n === base.handler }, n))),
    kind: el("select", { id: "j-kind", name: "kind" }, KINDS.map(([v, t]) => el("option", { value: v, selected: v === kind0 }, t))),
    cron: input("cron", base.cron, { placeholder: "0 9 * * 1-5", autocomplete: "off" }),
    tz: input("tz", base.tz ?? (Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC"), { placeholder: "Europe/Berlin" }),
    every: input("every", base.every, { placeholder: "15m" }),
    at: input("at", base.at, { placeholder: "2026-12-24T18:00:00Z" }),
    payload: el("textarea", { id: "j-payload", name: "payload", rows: 3 }, JSON.stringify(base.payload ?? null)),
    queue: input("queue", base.queue ?? "default"),
    retries: input("retries", base.retries ?? 0, { type: "number", min: 0 }),
    timeout: input("timeout", base.timeout, { placeholder: "30s" }),
    description: input("description", base.description),
    tags: input("tags", (base.tags ?? []).join(","), { placeholder: "billing,eu" }),
    condition: el("select", { id: "j-condition", name: "condition" }, el("option", { value: "" }, "none"), names.map((n) => el("option", { value: n, selected: n === base.condition }, n))),
    paused: el("input", { id: "j-paused", name: "paused", type: "checkbox", checked: !!base.paused }),
  };
  const preview = el("ol", { class: "mono", id: "preview" });
  const previewError = el("p", { class: "error", id: "preview-error", role: "alert" });
  const formError = el("p", { class: "error", id: "form-error", role: "alert" });
  const show = () => {
    const k = f.kind.value;
    for (const [id, kinds] of [["cron", ["cron"]], ["tz", ["cron"]], ["every", ["every"]], ["at", ["at"]]])
      f[id].closest(".field").hidden = !kinds.includes(k);
  };
  // The next 5 runs as they are typed: in the job's zone and in UTC.
  let pending = null, asked = 0;
  const refresh = () => {
    clearTimeout(pending);
    pending = setTimeout(async () => {
      const k = f.kind.value, n = ++asked;
      const q = new URLSearchParams({ count: "5" });
      if (k === "cron") { q.set("cron", f.cron.value.trim()); if (f.tz.value.trim()) q.set("tz", f.tz.value.trim()); }
      else if (k === "every") q.set("every", f.every.value.trim());
      else if (k === "at") q.set("at", f.at.value.trim());
      else { put(preview, el("li", { class: "muted" }, "A daemon runs all the time.")); previewError.textContent = ""; return; }
      try {
        const times = await api(`/v1/preview?${q}`);
        if (n !== asked) return;
        previewError.textContent = "";
        put(preview, times.map((t) => el("li", {}, zoned(t, k === "cron" ? f.tz.value.trim() || "UTC" : null))));
      } catch (e) {
        if (n !== asked) return;
        put(preview);
        previewError.textContent = e.message;
      }
    }, 250);
  };
  for (const id of ["kind", "cron", "tz", "every", "at"]) f[id].addEventListener("input", () => { show(); refresh(); });
  const submit = async (e) => {
    e.preventDefault();
    formError.textContent = "";
    const b = { ...base };
    for (const k of ["cron", "tz", "every", "at", "daemon", "start"]) delete b[k];
    b.name = f.name.value.trim();
    b.handler = f.handler.value;
    const k = f.kind.value;
    if (k === "cron") { b.cron = f.cron.value.trim(); b.tz = f.tz.value.trim() || "UTC"; }
    else if (k === "every") { b.every = f.every.value.trim(); if (job && base.start) b.start = base.start; }
    else if (k === "at") b.at = f.at.value.trim();
    else b.daemon = true;
    try { b.payload = JSON.parse(f.payload.value || "null"); } catch (err) { formError.textContent = `payload: ${err.message}`; return; }
    b.queue = f.queue.value.trim() || "default";
    b.retries = Number(f.retries.value || 0);
    b.timeout = f.timeout.value.trim() || undefined;
    b.description = f.description.value.trim() || undefined;
    const tags = f.tags.value.split(",").map((t) => t.trim()).filter(Boolean);
    b.tags = tags.length ? tags : undefined;
    b.condition = f.condition.value || undefined;
    b.paused = f.paused.checked;
    try {
      if (job) await api(`/v1/jobs/${encodeURIComponent(name)}`, { method: "PUT", body: b });
      else await api("/v1/jobs", { method: "POST", body: b });
      toast(`${job ? "Saved" : "Created"} ${b.name}`);
      location.hash = `#/jobs/${encodeURIComponent(b.name)}`;
    } catch (err) {
      formError.textContent = err.message;
    }
  };
  const form = el("form", { class: "job-form", id: "job-form", onsubmit: submit },
    field("name", "Name", f.name, job ? "A job keeps its name." : "Letters, digits, -, _, . and :"),
    field("handler", "Handler", f.handler),
    field("kind", "Runs", f.kind),
    field("cron", "Cron", f.cron, "Five fields (six with seconds), or @daily…"),
    field("tz", "Time zone", f.tz),
    field("every", "Every", f.every, "A number and a unit: 30s, 15m, 2h"),
    field("at", "At", f.at, "RFC 3339"),
    field("payload", "Payload (JSON)", f.payload),
    field("queue", "Queue", f.queue),
    field("retries", "Retries", f.retries),
    field("timeout", "Timeout", f.timeout),
    field("condition", "Condition", f.condition, "Runs before each occurrence: false skips it"),
    field("description", "Description", f.description),
    field("tags", "Tags", f.tags, "Comma-separated"),
    el("div", { class: "field" }, el("label", {}, f.paused, " paused")),
    el("div", { class: "field" }, el("button", { class: "primary", type: "submit", id: "job-save" }, job ? "Save" : "Create")),
    formError);
  put($main, el("h1", {}, job ? `Edit job ${name}` : "New job"),
    el("div", { class: "grid" }, card(null, form), card("Next 5 runs", preview, previewError)));
  show();
  refresh();
}

// ---------- workflows ----------

async function workflows() {
  const all = await api("/v1/workflows?limit=100");
  $main.replaceChildren(el("h1", {}, "Workflows"), card(null, table(["Workflow", "Name", "Status", "Created", "Steps"],
    all.map((w) => el("tr", {}, el("td", { class: "mono" }, link(`#/workflows/${w.id}`, short(w.id))), el("td", {}, w.name), el("td", {}, status(w.status)),
      el("td", {}, when(w.created_at)), el("td", {}, Object.entries(w.steps).map(([s, n]) => `${n} ${s}`).join(", ")))), "No workflow yet.")));
}

async function workflow(id) {
  const draw = async () => {
    const w = await api(`/v1/workflows/${id}`);
    put($main, el("h1", {}, `Workflow ${w.name} `, status(w.status)),
      el("div", { class: "actions" }, el("button", { type: "button", class: "danger", id: "wf-cancel",
        disabled: ["succeeded", "failed", "cancelled"].includes(w.status),
        onclick: () => act("Cancel workflow", () => api(`/v1/workflows/${id}/cancel`, { method: "POST", body: { reason: "cancelled from the dashboard" } })).then(draw) }, "Cancel")),
      card("Graph", el("div", { class: "graph", id: "graph" }, graph(w.steps))),
      card("Steps", table(["Step", "Handler", "After", "Status", "Execution", "Error"], w.steps.map((s) => el("tr", { "data-step": s.name },
        el("td", {}, s.name), el("td", {}, s.handler), el("td", {}, s.after.join(", ") || "—"), el("td", {}, status(s.status)),
        el("td", { class: "mono" }, s.execution ? link(`#/executions/${s.execution}`, short(s.execution)) : "—"), el("td", { class: "wrap" }, s.error ?? ""))))));
    return w;
  };
  const w = await draw();
  if (!["succeeded", "failed", "cancelled"].includes(w.status)) {
    follow("/v1/events", { state: () => draw().catch(() => {}) });
    every(5000, () => draw().catch(() => {}));
  }
}

/** The steps as a layered graph: each step one column right of its deepest parent. */
function graph(steps) {
  const depth = new Map();
  const byName = new Map(steps.map((s) => [s.name, s]));
  const d = (s, seen = new Set()) => {
    if (depth.has(s.name)) return depth.get(s.name);
    if (seen.has(s.name)) return 0;
    seen.add(s.name);
    const v = s.after.length ? 1 + Math.max(...s.after.map((a) => (byName.has(a) ? d(byName.get(a), seen) : 0))) : 0;
    depth.set(s.name, v);
    return v;
  };
  steps.forEach((s) => d(s));
  const cols = new Map();
  for (const s of steps) { const c = depth.get(s.name); cols.set(c, [...(cols.get(c) ?? []), s]); }
  const NW = 150, NH = 40, GX = 60, GY = 18;
  const pos = new Map();
  let rows = 0;
  for (const [c, list] of cols) { list.forEach((s, i) => pos.set(s.name, { x: 10 + c * (NW + GX), y: 10 + i * (NH + GY) })); rows = Math.max(rows, list.length); }
  const W = 20 + cols.size * (NW + GX), H = 20 + rows * (NH + GY);
  const color = (st) => ({ succeeded: "var(--ok)", failed: "var(--bad)", running: "var(--run)", cancelled: "var(--idle)", pending: "var(--warn)", waiting: "var(--warn)" }[st] ?? "var(--idle)");
  const g = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "Workflow steps" },
    svg("defs", {}, svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto" }, svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "var(--muted)" }))));
  for (const s of steps) for (const a of s.after) {
    const p = pos.get(a), q = pos.get(s.name);
    if (p && q) g.append(svg("path", { d: `M${p.x + NW},${p.y + NH / 2} C${p.x + NW + GX / 2},${p.y + NH / 2} ${q.x - GX / 2},${q.y + NH / 2} ${q.x},${q.y + NH / 2}`, fill: "none", stroke: "var(--muted)", "marker-end": "url(#arrow)" }));
  }
  for (const s of steps) {
    const p = pos.get(s.name);
    const node = svg("g", { "data-step": s.name, "data-status": s.status ?? "unknown" },
      svg("rect", { x: p.x, y: p.y, width: NW, height: NH, rx: 6, fill: "var(--card)", stroke: color(s.status), "stroke-width": 2.5 }),
      svg("text", { x: p.x + 10, y: p.y + 17 }, s.name.length > 18 ? s.name.slice(0, 17) + "…" : s.name),
      svg("text", { x: p.x + 10, y: p.y + 32, fill: color(s.status) }, s.status ?? "—"),
      svg("title", {}, `${s.name}: ${s.status}`));
    g.append(s.execution ? svg("a", { href: `#/executions/${s.execution}` }, node) : node);
  }
  g.style.maxWidth = `${W}px`;
  return g;
}

// ---------- handlers ----------

async function handlers() {
  const all = await api("/v1/handlers");
  const lim = (h) => {
    const l = h.limits, out = [];
    if (l.timeout_ms) out.push(`timeout ${ms(l.timeout_ms)}`);
    if (l.pool_size) out.push(`pool ${l.pool_size}`);
    if (l.memory_max) out.push(`memory ${l.memory_max} B`);
    if (l.pids_max) out.push(`pids ${l.pids_max}`);
    if (l.cpu_max) out.push(`cpu ${l.cpu_max}`);
    if (l.cpu_time_s) out.push(`cpu time ${l.cpu_time_s}s`);
    if (l.open_files) out.push(`files ${l.open_files}`);
    if (l.run_as_user) out.push(`user ${l.run_as_user}`);
    if (l.no_new_privs) out.push("no_new_privs");
    if (l.heartbeat_timeout_ms) out.push(`heartbeat ${ms(l.heartbeat_timeout_ms)}`);
    out.push(`grace ${ms(l.cancel_grace_ms)} + ${ms(l.kill_grace_ms)}`);
    return out.join(", ");
  };
  $main.replaceChildren(el("h1", {}, "Handlers"), card(null, table(["Handler", "Kind", "Mode", "Program", "Limits and isolation"],
    all.map((h) => el("tr", {}, el("td", {}, link(`#/executions?handler=${encodeURIComponent(h.name)}`, h.name)), el("td", {}, h.kind), el("td", {}, h.mode),
      el("td", { class: "mono wrap" }, h.kind === "exec" ? [h.program, ...(h.args ?? [])].join(" ") : "—"), el("td", { class: "wrap" }, lim(h)))))));
}

// ---------- start ----------

await loadSession();
await render();
