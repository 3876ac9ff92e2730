/* The overview's request figures (requests/s, 5xx share, latency percentiles over the last
   5 minutes) come from the request log, not from live events: fetched again every 10 s while
   the page is visible. */
(function () {
  "use strict";
  const box = document.querySelector("[data-stats]");
  if (!box) return;

  function show(stats) {
    box.querySelectorAll("[data-stat]").forEach(function (el) {
      const value = stats[el.dataset.stat];
      const digits = { per_second: 2, error_pct: 1 }[el.dataset.stat] || 0;
      el.textContent = value == null ? "–" : value.toFixed(digits);
    });
  }

  function refresh() {
    if (document.hidden) return;
    fetch(box.dataset.stats, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (stats) { if (stats) show(stats); })
      .catch(function () { /* the next tick tries again */ });
  }

  setInterval(refresh, 10000);
  document.addEventListener("visibilitychange", refresh);
})();
