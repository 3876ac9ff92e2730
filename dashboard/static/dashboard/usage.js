/* The keys & usage page's charts: one line per busy key, from #usage-data. */
(function () {
  "use strict";
  const d = ClawCharts.readJSON("usage-data");
  if (!d) return;
  function perKey(el, byKey, unit) {
    const names = Object.keys(byKey);
    ClawCharts.timeSeries(el, {
      series: names.map(function (n) { return { label: n === "other" ? "other" : (n ? "ck-" + n : "single sign-on"), unit: unit }; }),
      data: [d.xs].concat(names.map(function (n) { return byKey[n]; })),
    });
  }
  perKey(document.getElementById("chart-key-requests"), d.requests, "");
  perKey(document.getElementById("chart-key-tokens"), d.tokens, "");
  ClawCharts.timeSeries(document.getElementById("chart-key-errors"), { series: [{ label: "errors", color: ClawCharts.palette[3] }], data: [d.xs, d.errors] });
})();
