/* The latency page's charts, from the data the server wrote into #latency-data. */
(function () {
  "use strict";
  const d = ClawCharts.readJSON("latency-data");
  if (!d) return;
  const C = ClawCharts;
  const pcts = [{ label: "p50", unit: "ms" }, { label: "p95", unit: "ms" }, { label: "p99", unit: "ms" }];
  C.timeSeries(document.getElementById("chart-latency"), { series: pcts, data: d.latency });
  C.timeSeries(document.getElementById("chart-ttft"), { series: pcts, data: d.ttft });
  C.histogram(document.getElementById("chart-latency-hist"), { edges: d.latency_hist.edges, counts: d.latency_hist.counts, unit: "ms" });
  C.histogram(document.getElementById("chart-ttft-hist"), { edges: d.ttft_hist.edges, counts: d.ttft_hist.counts, unit: "ms", color: C.palette[2] });
  C.timeSeries(document.getElementById("chart-traffic"), { series: [{ label: "requests/s" }], data: d.traffic });
  C.timeSeries(document.getElementById("chart-errors"), { series: [{ label: "errors", unit: "%", color: C.palette[3] }], data: d.errors });
  C.timeSeries(document.getElementById("chart-tokens"), { series: [{ label: "tokens/s", color: C.palette[2] }], data: d.tokens });
})();
