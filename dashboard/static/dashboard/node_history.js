/* A node page's GPU history charts (GpuSample, one a minute) with live readings appended,
   and its probe table grown by live probe events. */
(function () {
  "use strict";
  const node = document.querySelector("[data-node]").dataset.node;
  const rows = window.ClawCharts.readJSON("gpu-history") || [];
  const QUANTITIES = [
    { key: "utilisation_pct", unit: "%", range: [0, 100] },
    { key: "memory_used_gib", unit: "GiB" },
    { key: "temperature_c", unit: "°C" },
    { key: "power_w", unit: "W" },
  ];
  const live = { memory_used_gib: function (g) { return g.memory_used_mib == null ? null : g.memory_used_mib / 1024; } };

  // One series per GPU: x is the sample's time, y one column per GPU (null where absent).
  const times = [];
  const gpus = [];
  const at = {};
  rows.forEach(function (r) {
    if (!(r.t in at)) { at[r.t] = times.length; times.push(r.t); }
    if (gpus.indexOf(r.gpu) < 0) gpus.push(r.gpu);
  });
  const charts = {};
  const data = {};

  function build(q) {
    const series = gpus.map(function () { return new Array(times.length).fill(null); });
    rows.forEach(function (r) { series[gpus.indexOf(r.gpu)][at[r.t]] = r[q.key]; });
    data[q.key] = [times.slice()].concat(series);
    charts[q.key] = window.ClawCharts.timeSeries(document.getElementById("chart-" + q.key), {
      series: gpus.map(function (g) { return { label: "GPU " + g, unit: q.unit }; }),
      data: data[q.key],
      yRange: q.range,
      empty: "No samples yet: the agent's readings are sampled once a minute.",
    });
  }

  QUANTITIES.forEach(build);

  document.addEventListener("clawdbot:telemetry", function (ev) {
    const e = ev.detail;
    if (e.node !== node || !e.gpus.length) return;
    const t = Math.round(Date.parse(e.at) / 1000);
    const fresh = gpus.length === 0;
    e.gpus.forEach(function (g) { if (gpus.indexOf(g.index) < 0) gpus.push(g.index); });
    QUANTITIES.forEach(function (q) {
      if (fresh) {  // the first reading of a node without history: start its charts now
        times.length = 0;
        build(q);
      }
      const d = data[q.key];
      // Minute samples, then live readings every 5 s: a silence longer than a sample's
      // interval is a gap in the line, not a straight line across it.
      if (d[0].length && t - d[0][d[0].length - 1] > 90) {
        d[0].push(t - 1);
        for (let i = 1; i < d.length; i++) d[i].push(null);
      }
      d[0].push(t);
      gpus.forEach(function (index, i) {
        const g = e.gpus.find(function (x) { return x.index === index; });
        const value = !g ? null : live[q.key] ? live[q.key](g) : g[q.key];
        (d[i + 1] = d[i + 1] || new Array(d[0].length - 1).fill(null)).push(value);
      });
      if (charts[q.key]) charts[q.key].setData(d);
      else charts[q.key] = window.ClawCharts.timeSeries(document.getElementById("chart-" + q.key), {
        series: gpus.map(function (g) { return { label: "GPU " + g, unit: q.unit }; }), data: d, yRange: q.range,
      });
    });
  });

  document.addEventListener("clawdbot:state", function (ev) {
    const e = ev.detail;
    if (e.node !== node || e.state === e.previous) return;  // draining and undraining keep the state
    const empty = document.getElementById("no-transitions");
    if (empty) empty.remove();
    const li = document.createElement("li");
    const badge = document.createElement("span");
    badge.className = "badge badge-" + e.state;
    badge.textContent = e.state;
    const before = document.createElement("span");
    before.className = "muted";
    before.textContent = "from " + e.previous;
    const when = document.createElement("time");
    when.className = "when small muted";
    when.dateTime = e.at;
    when.textContent = new Date(e.at).toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
    li.append(badge, before, when);
    document.getElementById("transitions").prepend(li);
  });

  document.addEventListener("clawdbot:probe", function (ev) {
    const e = ev.detail;
    if (e.node !== node) return;
    const body = document.getElementById("probe-rows");
    const placeholder = body.querySelector(".placeholder");
    if (placeholder) placeholder.remove();
    const tr = document.createElement("tr");
    const cells = [
      new Date(e.at).toLocaleTimeString([], { hour12: false }),
      null,
      Math.round(e.latency_ms) + " ms",
      e.state,
      e.error,
    ];
    cells.forEach(function (text, i) {
      const td = document.createElement("td");
      if (i === 1) {
        const b = document.createElement("span");
        b.className = "badge badge-" + (e.ok ? "ok" : "fail");
        b.textContent = e.ok ? "ok" : "failed";
        td.appendChild(b);
      } else td.textContent = text;
      if (i === 0 || i === 2) td.className = "num";
      if (i === 4) td.className = "wrap";
      tr.appendChild(td);
    });
    body.prepend(tr);
    while (body.children.length > 50) body.lastElementChild.remove();
  });
})();
