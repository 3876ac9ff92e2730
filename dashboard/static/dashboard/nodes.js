/* Node cards and rows, kept live: GPU meters drawn from the figures the page was rendered
   with (#gpu-figures) and redrawn from each telemetry event; state, flags and the last probe
   updated from state and probe events. Elements are found by [data-node] and [data-field]. */
(function () {
  "use strict";

  // Levels of a meter: warn and bad thresholds, in percent of its range.
  const LEVELS = {
    memory: [90, 97],
    temperature: [80, 88],  // of 100 °C
    power: [95, 100],       // of the power limit
    utilisation: [101, 101], // a busy GPU is the point, never a warning
  };

  function level(kind, pct) {
    const [warn, bad] = LEVELS[kind];
    return pct >= bad ? "bad" : pct >= warn ? "warn" : "ok";
  }

  function meter(label, kind, pct, text) {
    const box = document.createElement("div");
    box.className = "meter";
    box.dataset.kind = kind;
    const top = document.createElement("div");
    top.className = "meter-top";
    const name = document.createElement("span");
    name.textContent = label;
    const value = document.createElement("span");
    value.textContent = text;
    top.append(name, value);
    const bar = document.createElement("div");
    bar.className = "meter-bar";
    const fill = document.createElement("i");
    const clamped = pct == null ? 0 : Math.max(0, Math.min(100, pct));
    fill.style.width = clamped + "%";
    bar.appendChild(fill);
    box.append(top, bar);
    if (pct != null) box.dataset.level = level(kind, pct);
    return box;
  }

  function num(v, digits) { return v == null ? "–" : Number(v).toFixed(digits); }

  function gpuBlock(g) {
    const block = document.createElement("div");
    block.className = "gpu";
    block.dataset.gpu = g.index;
    const name = document.createElement("div");
    name.className = "gpu-name";
    name.textContent = "GPU " + g.index + (g.name ? " · " + g.name : "");
    const meters = document.createElement("div");
    meters.className = "meters";
    const memPct = g.memory_used_mib != null && g.memory_total_mib ? 100 * g.memory_used_mib / g.memory_total_mib : null;
    const powerPct = g.power_w != null && g.power_limit_w ? 100 * g.power_w / g.power_limit_w : null;
    meters.append(
      meter("Utilisation", "utilisation", g.utilisation_pct, num(g.utilisation_pct, 0) + " %"),
      meter("Memory", "memory", memPct, num(g.memory_used_mib / 1024, 1) + " / " + num(g.memory_total_mib / 1024, 0) + " GiB"),
      meter("Temperature", "temperature", g.temperature_c, num(g.temperature_c, 0) + " °C"),
      meter("Power", "power", powerPct, num(g.power_w, 0) + (g.power_limit_w ? " / " + num(g.power_limit_w, 0) : "") + " W"),
    );
    block.append(name, meters);
    return block;
  }

  function drawGpus(node, gpus, note) {
    document.querySelectorAll('[data-gpus="' + CSS.escape(node) + '"]').forEach(function (box) {
      box.replaceChildren();
      if (!gpus.length) {
        const p = document.createElement("p");
        p.className = "muted small";
        p.textContent = note || "no telemetry";
        box.appendChild(p);
        return;
      }
      gpus.forEach(function (g) { box.appendChild(gpuBlock(g)); });
    });
  }

  function fields(node, name) {
    return document.querySelectorAll('[data-node="' + CSS.escape(node) + '"] [data-field="' + name + '"]');
  }

  function setState(node, state) {
    fields(node, "state").forEach(function (el) {
      el.textContent = state;
      el.className = "badge badge-" + state;
    });
    recountReady();
  }

  // The overview's "Nodes ready" figure follows the cards' states.
  function recountReady() {
    const figure = document.querySelector('[data-field="ready-count"]');
    if (!figure || !figure.firstChild) return;
    const seen = new Set();
    let ready = 0;
    document.querySelectorAll('[data-node] [data-field="state"]').forEach(function (el) {
      const node = el.closest("[data-node]").dataset.node;
      if (seen.has(node)) return;
      seen.add(node);
      if (el.textContent.trim() === "READY") ready += 1;
    });
    figure.firstChild.textContent = ready + " ";
  }

  function clock(iso) {
    const t = document.createElement("time");
    t.dateTime = iso;
    t.textContent = new Date(iso).toLocaleTimeString([], { hour12: false });
    return t;
  }

  const initial = window.ClawCharts ? window.ClawCharts.readJSON("gpu-figures") : JSON.parse((document.getElementById("gpu-figures") || { textContent: "{}" }).textContent);
  Object.keys(initial || {}).forEach(function (node) {
    if (initial[node].length) drawGpus(node, initial[node]);
  });

  window.ClawLive.on("node.telemetry", function (e) {
    drawGpus(e.node, e.gpus, e.error ? "no telemetry: " + e.error : "no telemetry: NVML unavailable");
    document.dispatchEvent(new CustomEvent("clawdbot:telemetry", { detail: e }));
  });
  window.ClawLive.on("node.state", function (e) {
    if (!document.querySelector('[data-node="' + CSS.escape(e.node) + '"]')) {
      location.reload();  // a node this page has never seen: draw it from the server
      return;
    }
    setState(e.node, e.state);
    document.dispatchEvent(new CustomEvent("clawdbot:state", { detail: e }));
    fields(e.node, "flags").forEach(function (el) {
      el.hidden = e.enabled && !e.draining;
      el.textContent = !e.enabled ? "disabled" : e.draining ? "draining: finishing its requests, taking no new ones" : "";
    });
    fields(e.node, "error").forEach(function (el) { el.textContent = e.error; });
  });
  const TIERS = ["normal", "cache", "downgrade", "static"];
  window.ClawLive.on("cluster.load", function (e) {
    document.querySelectorAll('[data-field="tier"]').forEach(function (el) {
      el.className = "badge badge-tier-" + e.tier;
      el.textContent = "tier " + e.tier + " · " + (TIERS[e.tier] || "?");
    });
    Object.keys(e.nodes).forEach(function (node) {
      ["in_flight", "queued"].forEach(function (name, i) {
        fields(node, name).forEach(function (el) { el.textContent = e.nodes[node][i] + " / " + el.dataset.max; });
      });
    });
  });
  window.ClawLive.on("node.probe", function (e) {
    setState(e.node, e.state);
    fields(e.node, "last_probe").forEach(function (el) {
      el.replaceChildren(clock(e.at), document.createTextNode(" · " + Math.round(e.latency_ms) + " ms"));
    });
    fields(e.node, "error").forEach(function (el) { el.textContent = e.error; });
    document.dispatchEvent(new CustomEvent("clawdbot:probe", { detail: e }));
  });
})();
