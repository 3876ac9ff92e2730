/* Clawdbot console charts: the one place pages build charts, as thin helpers over uPlot
   (installed from npm by `make`, served from /static/vendor/uplot/; no CDN).

   ClawCharts.timeSeries(el, {series: [{label, unit?, color?, points?}], data: [xs (unix s), ys...], yRange?})
     (points: true draws each value as a dot too, so a lone value between gaps shows)
   ClawCharts.histogram(el, {edges: [upper bounds], counts: [...], label, unit?})
   ClawCharts.readJSON(id)  the data a template wrote with {{ value|json_script:id }}
   Each returns the uPlot instance (or null, with a note in el, when there is nothing to draw).
   Charts follow their container's width, also when the window is resized. */
(function () {
  "use strict";
  const palette = ["#3461e6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#0ea5e9", "#ec4899", "#64748b"];
  const charts = new Set();

  function note(el, text) {
    el.replaceChildren();
    const div = document.createElement("div");
    div.className = "chart-empty";
    div.textContent = text;
    el.appendChild(div);
    return null;
  }

  function available(el) {
    if (typeof window.uPlot === "function") return true;
    note(el, "The chart library is missing: run `make` (it installs it with npm).");
    return false;
  }

  function size(el) {
    const height = Number(el.dataset.height || 220);
    return { width: Math.max(el.clientWidth, 240), height: height };
  }

  function track(chart, el) {
    charts.add({ chart: chart, el: el });
    return chart;
  }

  let pending = 0;
  window.addEventListener("resize", function () {
    cancelAnimationFrame(pending);
    pending = requestAnimationFrame(function () {
      charts.forEach(function (c) { c.chart.setSize(size(c.el)); });
    });
  });

  function fmt(unit) {
    return function (u, v) { return v == null ? "–" : (Math.round(v * 100) / 100) + (unit ? " " + unit : ""); };
  }

  function timeSeries(el, opts) {
    if (!available(el)) return null;
    if (!opts.data || !opts.data[0] || opts.data[0].length === 0) return note(el, opts.empty || "No data yet.");
    const unit = (opts.series[0] && opts.series[0].unit) || "";
    el.replaceChildren();
    const chart = new window.uPlot({
      ...size(el),
      cursor: { drag: { x: true, y: false } },
      scales: { x: { time: true }, y: opts.yRange ? { range: opts.yRange } : { auto: true } },
      axes: [
        { stroke: "#5d6779", grid: { stroke: "#eef1f6" } },
        { stroke: "#5d6779", grid: { stroke: "#eef1f6" }, size: 68, values: function (u, vals) { return vals.map(function (v) { return v + (unit ? " " + unit : ""); }); } },
      ],
      series: [{}].concat(opts.series.map(function (s, i) {
        return {
          label: s.label,
          stroke: s.color || palette[i % palette.length],
          width: 2,
          points: { show: !!s.points, size: 5 },
          spanGaps: false,
          value: fmt(s.unit),
        };
      })),
    }, opts.data, el);
    return track(chart, el);
  }

  function histogram(el, opts) {
    if (!available(el)) return null;
    const total = (opts.counts || []).reduce(function (a, b) { return a + b; }, 0);
    if (total === 0) return note(el, opts.empty || "No requests in this window.");
    const xs = opts.counts.map(function (_, i) { return i; });
    const labels = opts.edges.map(function (e) { return e === null ? "more" : "≤" + e + (opts.unit ? " " + opts.unit : ""); });
    el.replaceChildren();
    const chart = new window.uPlot({
      ...size(el),
      legend: { show: false },
      scales: { x: { time: false, range: [-0.6, xs.length - 0.4] } },
      axes: [
        { stroke: "#5d6779", grid: { show: false }, splits: function () { return xs; }, values: function (u, vals) { return vals.map(function (v) { return labels[v] || ""; }); } },
        { stroke: "#5d6779", grid: { stroke: "#eef1f6" }, size: 48 },
      ],
      series: [{}, {
        label: opts.label || "requests",
        fill: (opts.color || palette[0]) + "cc",
        stroke: opts.color || palette[0],
        paths: window.uPlot.paths.bars({ size: [0.8, 64] }),
        points: { show: false },
      }],
    }, [xs, opts.counts], el);
    return track(chart, el);
  }

  function readJSON(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  window.ClawCharts = { timeSeries: timeSeries, histogram: histogram, readJSON: readJSON, palette: palette };
})();
