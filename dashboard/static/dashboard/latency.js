/* The latency page's charts, from the data the server wrote into #latency-data. */
(function () {
  "use strict";
  const d = ClawCharts.readJSON("latency-data");
  if (!d) return;
  const C = ClawCharts;
  // A window with no requests: the helper's empty note rather than a blank axis.
  function orEmpty(data) {
    const any = data.slice(1).some(function (ys) { return ys.some(function (y) { return y !== null; }); });
    return any ? data : [[]];
  }
  const pcts = [{ label: "p50", unit: "ms", points: true }, { label: "p95", unit: "ms", points: true }, { label: "p99", unit: "ms", points: true }];
  C.timeSeries(document.getElementById("chart-latency"), { series: pcts, data: orEmpty(d.latency) });
  C.timeSeries(document.getElementById("chart-ttft"), { series: pcts, data: orEmpty(d.ttft) });
  C.histogram(document.getElementById("chart-latency-hist"), { edges: d.latency_hist.edges, counts: d.latency_hist.counts });
  C.histogram(document.getElementById("chart-ttft-hist"), { edges: d.ttft_hist.edges, counts: d.ttft_hist.counts, color: C.palette[2] });
  C.timeSeries(document.getElementById("chart-traffic"), { series: [{ label: "requests/s", points: true }], data: orEmpty(d.traffic) });
  C.timeSeries(document.getElementById("chart-errors"), { series: [{ label: "errors", unit: "%", color: C.palette[3], points: true }], data: orEmpty(d.errors) });
  C.timeSeries(document.getElementById("chart-tokens"), { series: [{ label: "tokens/s", color: C.palette[2], points: true }], data: orEmpty(d.tokens) });
})();
