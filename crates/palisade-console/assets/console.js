// Palisade console. Plain JavaScript, no dependencies: the page polls the JSON API under /ui/api
// with its session cookie and sends the session's CSRF token with every change.
"use strict";

(function () {
  const POLL_MS = 2000;
  const COLORS = ["#2b6cb0", "#2f855a", "#b7791f", "#c53030", "#6b46c1", "#319795", "#718096"];
  let csrf = null;
  let view = "traffic";
  let timer = null;

  const $ = (selector) => document.querySelector(selector);

  function text(value) {
    return value === null || value === undefined ? "" : String(value);
  }

  function cell(row, value, className) {
    const td = document.createElement("td");
    td.textContent = text(value);
    if (className) td.className = className;
    row.appendChild(td);
    return td;
  }

  // Rebuilds a table's rows, unless they are what it already shows: a button a person is about to
  // click is not replaced under the pointer by a refresh that changed nothing.
  function fill(tableSelector, rows, build) {
    const body = $(tableSelector + " tbody");
    const signature = JSON.stringify(rows);
    if (body.dataset.signature === signature) return;
    body.dataset.signature = signature;
    body.replaceChildren();
    for (const item of rows) {
      const tr = document.createElement("tr");
      build(tr, item);
      body.appendChild(tr);
    }
    $(tableSelector).dataset.rows = String(rows.length);
  }

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return "";
    const s = Math.round(seconds);
    if (s < 0) return "expired";
    if (s < 120) return s + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    if (s < 172800) return Math.round(s / 3600) + " h";
    return Math.round(s / 86400) + " d";
  }

  function time(unixSeconds) {
    if (!unixSeconds) return "";
    return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
  }

  async function api(path, options) {
    const init = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    if (init.method && init.method !== "GET") init.headers["X-CSRF-Token"] = csrf || "";
    const response = await fetch(path, init);
    if (response.status === 401) {
      showLogin();
      throw new Error("logged out");
    }
    return response;
  }

  async function json(path) {
    const response = await api(path);
    if (!response.ok) throw new Error(path + ": " + response.status);
    return response.json();
  }

  // A line chart of several series into an SVG element: x is time, from the oldest sample kept (at
  // most an hour back, at least a minute) to the newest; lone points are drawn as dots. `data-points` says how many non-zero
  // points it drew (the browser tests watch it move).
  function chart(svg, times, series, legend) {
    const ns = "http://www.w3.org/2000/svg";
    const width = 600, height = 200, pad = 34;
    svg.replaceChildren();
    let max = 0, points = 0;
    for (const [, values] of series) for (const v of values) if (v !== null && v > max) max = v;
    const scale = max > 0 ? max : 1;
    const end = times.length ? times[times.length - 1] : Date.now() / 1000;
    const span = Math.min(Math.max(times.length ? end - times[0] : 0, 60), 3600);
    const x = (t) => pad + ((width - pad - 6) * (t - (end - span))) / span;
    const y = (v) => height - pad - ((height - pad - 8) * v) / scale;
    const add = (name, attributes, content) => {
      const element = document.createElementNS(ns, name);
      for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
      if (content !== undefined) element.textContent = content;
      svg.appendChild(element);
      return element;
    };
    add("path", { d: `M${pad} 4 V${height - pad} H${width - 4}`, class: "axis" });
    add("path", { d: `M${pad} ${y(scale)} H${width - 4}`, class: "grid" });
    add("text", { x: 2, y: y(scale) + 4, class: "tick" }, Number(scale.toPrecision(3)).toString());
    add("text", { x: 2, y: height - pad + 4, class: "tick" }, "0");
    add("text", { x: pad, y: height - 10, class: "tick" }, time(end - span).slice(11, 19));
    add("text", { x: width - 56, y: height - 10, class: "tick" }, time(end).slice(11, 19));
    legend.replaceChildren();
    series.forEach(([name, values], index) => {
      const color = COLORS[index % COLORS.length];
      let d = "", drawn = 0, lastX = 0, lastY = 0;
      values.forEach((v, i) => {
        if (v === null || i >= times.length) return;
        if (v > 0) points += 1;
        lastX = x(times[i]);
        lastY = y(v);
        d += (d === "" ? "M" : "L") + lastX.toFixed(1) + " " + lastY.toFixed(1) + " ";
        drawn += 1;
      });
      if (drawn > 1) add("path", { d, stroke: color, fill: "none", class: "line" });
      if (drawn >= 1) add("circle", { cx: lastX.toFixed(1), cy: lastY.toFixed(1), r: 3, fill: color });
      const key = document.createElement("span");
      const swatch = document.createElement("i");
      swatch.className = "swatch c" + (index % COLORS.length);
      key.appendChild(swatch);
      key.appendChild(document.createTextNode(name));
      legend.appendChild(key);
    });
    svg.dataset.points = String(points);
  }

  const views = {
    async traffic() {
      const t = await json("/ui/api/traffic");
      const classes = t.classes.filter(([, values]) => values.some((v) => v > 0));
      chart($("#traffic-chart"), t.times, classes.length ? classes : t.classes.slice(1, 2), $("#traffic-legend"));
      const busiest = t.routes.slice(0, 6).map((r) => [r.route, r.rps]);
      chart($("#routes-chart"), t.times, busiest, $("#routes-legend"));
      chart($("#latency-chart"), t.times, t.latency_ms, $("#latency-legend"));
      fill("#routes-table", t.routes, (tr, r) => {
        cell(tr, r.route);
        cell(tr, r.requests, "num");
        cell(tr, (r.rps.length ? r.rps[r.rps.length - 1] : 0).toFixed(1), "num");
        cell(tr, r.errors_5xx, "num");
        cell(tr, r.p50_ms, "num");
        cell(tr, r.p99_ms, "num");
      });
    },
    async decisions() {
      const d = await json("/ui/api/decisions");
      chart($("#decisions-chart"), d.series.times, d.series.kinds, $("#decisions-legend"));
      fill("#top-reasons", d.top.reasons, (tr, r) => { cell(tr, r.stage); cell(tr, r.name); cell(tr, r.count, "num"); });
      fill("#top-clients", d.top.clients, (tr, r) => { cell(tr, r.name); cell(tr, r.count, "num"); });
      fill("#top-principals", d.top.principals, (tr, r) => { cell(tr, r.name); cell(tr, r.count, "num"); });
    },
    async alerts() {
      const a = await json("/ui/api/alerts");
      fill("#alerts-table", a.alerts, (tr, alert) => {
        cell(tr, alert.detector);
        cell(tr, alert.subject);
        cell(tr, alert.severity, "severity-" + text(alert.severity));
        cell(tr, alert.state);
        cell(tr, alert.message);
      });
      fill("#responses-table", a.responses, (tr, r) => {
        cell(tr, r.target);
        cell(tr, r.action);
        cell(tr, r.source);
        cell(tr, time(r.expires_at));
        cell(tr, r.reason);
        const td = document.createElement("td");
        const lift = document.createElement("button");
        lift.type = "button";
        lift.className = "lift";
        lift.dataset.id = r.id;
        lift.textContent = "Lift";
        lift.addEventListener("click", () => liftResponse(r.id));
        td.appendChild(lift);
        tr.appendChild(td);
      });
    },
    async upstreams() {
      const u = await json("/ui/api/upstreams");
      const rows = [];
      for (const cluster of u.clusters) for (const target of cluster.targets) rows.push([cluster, target]);
      fill("#upstreams-table", rows, (tr, [cluster, target]) => {
        cell(tr, cluster.name);
        cell(tr, target.address);
        cell(tr, target.health, "health-" + target.health);
        cell(tr, duration(target.ejected_for_seconds));
        cell(tr, target.ejections, "num");
        cell(tr, target.latency_ms, "num");
      });
    },
    async mesh() {
      const m = await json("/ui/api/mesh");
      fill("#identities-table", m.identities, (tr, id) => {
        cell(tr, id.held_by);
        cell(tr, id.identity);
        cell(tr, time(id.expires_at));
        cell(tr, duration(id.seconds_left), id.seconds_left < 3600 ? "warn" : "");
        cell(tr, id.renewal);
      });
      fill("#roots-table", m.roots, (tr, root) => {
        cell(tr, root.used_by);
        cell(tr, root.subject);
        cell(tr, time(root.expires_at));
        cell(tr, duration(root.seconds_left), root.seconds_left < 30 * 86400 ? "warn" : "");
      });
    },
    async config() {
      const c = await json("/ui/api/config");
      const summary = $("#config-summary");
      summary.replaceChildren();
      for (const [name, value] of [["Version", c.version], ["Config file", c.path], ["Last reload", c.last_reload ? time(c.last_reload.at) + " — " + c.last_reload.outcome : "none since start"], ["Reloads (ok / rejected)", c.reloads_ok + " / " + c.reloads_rejected]]) {
        const dt = document.createElement("dt");
        dt.textContent = name;
        const dd = document.createElement("dd");
        dd.textContent = text(value);
        summary.appendChild(dt);
        summary.appendChild(dd);
      }
      fill("#config-routes", c.routes, (tr, r) => {
        cell(tr, r.name);
        cell(tr, r.match);
        cell(tr, r.cluster);
        cell(tr, r.authentication);
        cell(tr, r.authorization);
        cell(tr, r.limits);
        cell(tr, r.validation);
      });
    },
    async audit() {
      const params = new URLSearchParams();
      const kind = $("#audit-kind").value.trim();
      const q = $("#audit-text").value.trim();
      if (kind) params.set("kind", kind);
      if (q) params.set("q", q);
      const a = await json("/ui/api/audit?" + params.toString());
      fill("#audit-table", a.events, (tr, e) => {
        cell(tr, new Date(e.time).toISOString());
        cell(tr, e.unmapped && e.unmapped.event);
        cell(tr, e.status_detail || e.status);
        cell(tr, e.src_endpoint && e.src_endpoint.ip);
        cell(tr, e.message);
      });
    },
  };

  async function refresh() {
    try {
      await views[view]();
      $("#status").textContent = "updated " + new Date().toLocaleTimeString();
      $("#status").className = "";
    } catch (error) {
      if (String(error.message) !== "logged out") {
        $("#status").textContent = "not updated: " + error.message;
        $("#status").className = "error";
      }
    }
  }

  function show(name) {
    view = name;
    for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== "view-" + name;
    for (const button of document.querySelectorAll("#nav button")) button.classList.toggle("active", button.dataset.view === name);
    refresh();
  }

  function showLogin() {
    csrf = null;
    if (timer) clearInterval(timer);
    timer = null;
    $("#nav").hidden = true;
    $("#logout").hidden = true;
    for (const section of document.querySelectorAll(".view")) section.hidden = true;
    $("#login").hidden = false;
    $("#token").focus();
  }

  async function start() {
    const response = await fetch("/ui/api/session", { credentials: "same-origin" });
    const session = response.ok ? await response.json() : { authenticated: false };
    if (!session.authenticated) {
      showLogin();
      return;
    }
    csrf = session.csrf;
    $("#login").hidden = true;
    $("#nav").hidden = false;
    $("#logout").hidden = false;
    show(view);
    if (!timer) timer = setInterval(refresh, POLL_MS);
  }

  async function login(event) {
    event.preventDefault();
    const body = new URLSearchParams({ token: $("#token").value });
    const response = await fetch("/ui/login", { method: "POST", body, credentials: "same-origin" });
    $("#token").value = "";
    if (response.status === 204) {
      $("#login-error").hidden = true;
      await start();
    } else {
      const problem = await response.json().catch(() => ({}));
      $("#login-error").textContent = problem.detail || "Login refused (" + response.status + ")";
      $("#login-error").hidden = false;
    }
  }

  async function logout() {
    await api("/ui/logout", { method: "POST" }).catch(() => {});
    showLogin();
  }

  async function liftResponse(id) {
    const response = await api("/ui/api/responses/" + encodeURIComponent(id), { method: "DELETE" });
    if (!response.ok) $("#status").textContent = "lift refused: " + response.status;
    refresh();
  }

  async function block(event) {
    event.preventDefault();
    const kind = $("#block-kind").value;
    const body = { action: "block", ttl: $("#block-ttl").value.trim() };
    body[kind] = $("#block-target").value.trim();
    const reason = $("#block-reason").value.trim();
    if (reason) body.reason = reason;
    const response = await api("/ui/api/responses", {
      method: "POST",
      body: JSON.stringify(body),
      headers: { "Content-Type": "application/json" },
    });
    if (response.ok) {
      $("#block-error").hidden = true;
      $("#block-form").reset();
    } else {
      const problem = await response.json().catch(() => ({}));
      $("#block-error").textContent = problem.detail || "refused (" + response.status + ")";
      $("#block-error").hidden = false;
    }
    refresh();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", login);
    $("#logout").addEventListener("click", logout);
    $("#block-form").addEventListener("submit", block);
    $("#audit-filter").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
    for (const button of document.querySelectorAll("#nav button")) button.addEventListener("click", () => show(button.dataset.view));
    start();
  });
})();
