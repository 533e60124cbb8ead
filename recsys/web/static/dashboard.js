// The dashboard's scripts: charts (Plotly, served from the installed plotly package), and the buttons
// and the rule editor, which call /dashboard/api/... (the Serve API with the signed-in user's key).
"use strict";

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  Object.entries(attrs || {}).forEach(([k, v]) => e.setAttribute(k, v));
  if (text !== undefined) e.textContent = text;
  return e;
}

async function call(method, url, body) {
  const r = await fetch(url, {method, headers: body === undefined ? {} : {"Content-Type": "application/json"},
                              body: body === undefined ? undefined : JSON.stringify(body), credentials: "same-origin"});
  let data;
  try { data = await r.json(); } catch (e) { data = {detail: await r.text()}; }
  return {ok: r.ok, status: r.status, data};
}

function showResult(r) {
  const out = document.getElementById("action-result");
  if (!out) return;
  out.hidden = false;
  out.textContent = (r.ok ? "" : "refused (" + r.status + "): ") + JSON.stringify(r.data, null, 2);
}

function actionButtons() {
  document.querySelectorAll("button[data-post]").forEach(b => b.addEventListener("click", async () => {
    b.disabled = true;
    const r = await call("POST", b.dataset.post, {});
    showResult(r);
    if (r.ok) setTimeout(() => location.reload(), 600); else b.disabled = false;
  }));
  document.querySelectorAll("button[data-get]").forEach(b => b.addEventListener("click", async () => {
    const r = await call("GET", b.dataset.get);
    if (b.classList.contains("load") && r.ok && document.getElementById("rule-json")) {
      document.getElementById("rule-json").value = JSON.stringify(r.data.body, null, 2);
    } else {
      showResult(r);
    }
  }));
}

function card(c) {
  const d = el("div", {"class": "card", "data-sku": c.sku});
  d.append(el("div", {"class": "slot"}, "#" + (c.slot + 1)));
  d.append(el("div", {"class": "title"}, c.title));
  d.append(el("div", {"class": "meta"}, (c.category || "") + (c.brand ? " · " + c.brand : "")));
  const p = el("div", {"class": "price"}, c.price === null ? "" : "€" + c.price.toFixed(2) + " ");
  p.append(el("span", {"class": "band band-" + c.margin_band}, c.margin_band + " margin"));
  d.append(p);
  d.append(el("div", {"class": "why"}, c.source + (c.reasons.length ? ": " + c.reasons.join("; ") : "")));
  if (c.rules.length) d.append(el("div", {"class": "why rules"}, "rules: " + c.rules.join("; ")));
  d.append(el("div", {"class": "sku"}, c.sku));
  return d;
}

function ruleDocument() {
  const status = document.getElementById("rule-status");
  const errors = document.getElementById("rule-errors");
  errors.replaceChildren();
  status.textContent = "";
  try {
    return JSON.parse(document.getElementById("rule-json").value);
  } catch (e) {
    errors.append(el("li", {"data-path": "$"}, "$: not JSON: " + e.message));
    return null;
  }
}

function showErrors(r) {
  const errors = document.getElementById("rule-errors");
  const detail = Array.isArray(r.data.detail) ? r.data.detail : [{path: "$", reason: String(r.data.detail)}];
  detail.forEach(e => errors.append(el("li", {"data-path": e.path}, e.path + ": " + e.reason)));
}

function rulesPage() {
  actionButtons();
  const status = document.getElementById("rule-status");
  document.getElementById("validate").addEventListener("click", async () => {
    const doc = ruleDocument();
    if (doc === null) return;
    const r = await call("POST", "/dashboard/api/admin/rules/validate", doc);
    if (r.ok) status.textContent = "valid: " + r.data.rules + " rules"; else showErrors(r);
  });
  const save = document.getElementById("save-draft");
  if (save) save.addEventListener("click", async () => {
    const doc = ruleDocument();
    if (doc === null) return;
    const r = await call("POST", "/dashboard/api/admin/rules", doc);
    if (r.ok) {
      status.textContent = "saved as draft " + r.data.label;
      status.dataset.version = r.data.version;
      setTimeout(() => location.reload(), 600);
    }
    else showErrors(r);
  });
  const preview = document.getElementById("preview");
  if (preview) preview.addEventListener("click", async () => {
    const doc = ruleDocument();
    if (doc === null) return;
    const ask = {surface: document.getElementById("pv-surface").value, rule_set: doc};
    ["sku", "cart", "user"].forEach(f => {
      const v = document.getElementById("pv-" + f).value.trim();
      if (v) ask[f === "user" ? "user_id" : f] = v;
    });
    const r = await call("POST", "/dashboard/api/rules/preview", ask);
    if (!r.ok) { showErrors(r); return; }
    document.getElementById("preview-result").hidden = false;
    document.getElementById("pv-live-version").textContent = r.data.live.rule_set_version || "(no rules)";
    document.getElementById("preview-live").replaceChildren(...r.data.live.cards.map(card));
    document.getElementById("preview-draft").replaceChildren(...r.data.draft.cards.map(card));
  });
}

function overviewCharts() {
  const data = JSON.parse(document.getElementById("charts-data").textContent);
  const layout = (title, yformat) => ({title: {text: title, font: {size: 13}}, margin: {l: 50, r: 10, t: 36, b: 36},
                                       yaxis: {tickformat: yformat || ""}, legend: {orientation: "h", y: -0.2}});
  const lines = (series, field) => Object.entries(series).map(([name, points]) => ({
    name, type: "scatter", mode: "lines+markers", x: points.map(p => p.hour), y: points.map(p => p[field])}));
  const plot = (id, traces, title, fmt) => {
    const l = layout(title, fmt);
    if (!traces.some(t => t.x.length)) {   // say so instead of drawing empty axes
      l.annotations = [{text: "no traffic in this window yet", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5}];
      l.xaxis = {visible: false}; l.yaxis = {visible: false};
    }
    Plotly.newPlot(id, traces, l, {displayModeBar: false, responsive: true});
  };
  const metrics = {requests: ["requests per hour", ""], ctr: ["CTR", ".1%"], add_to_cart_rate: ["add-to-cart rate", ".1%"],
                   conversion: ["conversion", ".2%"], aov: ["AOV (€)", ""], revenue_per_impression: ["revenue per impression (€)", ""]};
  Object.entries(metrics).forEach(([field, [title, fmt]]) => {
    plot("chart-" + field + "-surface", lines(data.by_surface, field), title + " by surface", fmt);
    plot("chart-" + field + "-arm", lines(data.by_arm, field), title + " by arm (live, or control and canary)", fmt);
  });
  const latency = [];
  Object.entries(data.by_surface).forEach(([name, points]) => {
    latency.push({name: name + " p50", type: "scatter", mode: "lines+markers", x: points.map(p => p.hour), y: points.map(p => p.latency_p50)});
    latency.push({name: name + " p95", type: "scatter", mode: "lines+markers", line: {dash: "dot"}, x: points.map(p => p.hour), y: points.map(p => p.latency_p95)});
  });
  plot("chart-latency", latency, "serving latency (ms), p50 and p95");
  const byType = {};
  data.events.forEach(e => { (byType[e.type] = byType[e.type] || {x: [], y: []}); byType[e.type].x.push(e.minute); byType[e.type].y.push(e.per_s); });
  plot("chart-events", Object.entries(byType).map(([name, s]) => ({name, type: "scatter", mode: "lines+markers", x: s.x, y: s.y})),
       "events per second (last hour)");
}
