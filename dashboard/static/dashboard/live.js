/* The console's live feed: one WebSocket to /ws/console/ per page, re-opened with a growing
   pause when it drops. Each event ({"type": ..., ...}) is handed to the handlers a page
   registered for its type with ClawLive.on(type, fn). An element with [data-live] shows
   whether the feed is connected. */
(function () {
  "use strict";
  const handlers = {};
  let retry = 1000;

  function mark(state) {
    document.querySelectorAll("[data-live]").forEach(function (el) {
      el.dataset.state = state;
      el.textContent = state === "open" ? "live" : "reconnecting";
      el.title = state === "open" ? "Live updates connected" : "Live updates disconnected; retrying";
    });
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    const ws = new WebSocket(scheme + location.host + "/ws/console/");
    ws.onopen = function () { retry = 1000; mark("open"); };
    ws.onmessage = function (message) {
      let event;
      try { event = JSON.parse(message.data); } catch (e) { return; }
      (handlers[event.type] || []).forEach(function (fn) { fn(event); });
    };
    ws.onclose = function () {
      mark("closed");
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
  }

  window.ClawLive = {
    on: function (type, fn) { (handlers[type] = handlers[type] || []).push(fn); },
  };
  document.addEventListener("DOMContentLoaded", connect);
})();
