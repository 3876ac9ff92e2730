/* The chat page: /v1/chat/completions streamed over SSE with fetch + ReadableStream, using
   the key the server issued to this login session. Each answer shows which node served it
   (the X-Clawdbot-Node header), its latency, time to first token and token counts. */
(function () {
  "use strict";
  const config = JSON.parse(document.getElementById("chat-config").textContent);
  const log = document.getElementById("chat-log");
  const form = document.getElementById("chat-form");
  const input = document.getElementById("chat-input");
  const send = document.getElementById("chat-send");
  const modelSelect = document.getElementById("chat-model");
  let history = [];

  function bubble(kind, text) {
    const div = document.createElement("div");
    div.className = "msg " + kind;
    div.textContent = text;
    log.appendChild(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }

  function csrf() {
    const el = document.querySelector("input[name=csrfmiddlewaretoken]");
    return el ? el.value : "";
  }

  async function renewIfDue() {
    if (Date.parse(config.expires_at) - Date.now() > 60000) return;
    const response = await fetch(config.renew_url, { method: "POST", headers: { "X-CSRFToken": csrf() }, credentials: "same-origin" });
    if (!response.ok) throw new Error("could not renew the chat key (" + response.status + "): log in again");
    Object.assign(config, await response.json());
  }

  async function post(body) {
    // A key issued on this page load reaches every gateway process within a second or so
    // (routing snapshot); until then a 401 is retried a few times.
    for (let attempt = 0; ; attempt++) {
      const response = await fetch("/v1/chat/completions", {
        method: "POST",
        headers: { "Content-Type": "application/json", "Authorization": "Bearer " + config.key },
        body: JSON.stringify(body),
      });
      if (response.status !== 401 || attempt >= 6) return response;
      await response.text();
      await new Promise(function (resolve) { setTimeout(resolve, 250 * (attempt + 1)); });
    }
  }

  function meta(div, parts) {
    const span = document.createElement("span");
    span.className = "meta";
    span.dataset.testid = "answer-meta";
    span.textContent = parts.filter(Boolean).join(" · ");
    div.appendChild(span);
  }

  async function ask(text) {
    await renewIfDue();
    history.push({ role: "user", content: text });
    bubble("user", text);
    const answer = bubble("assistant", "…");
    const started = performance.now();
    let firstToken = null;
    let content = "";
    let usage = null;
    const response = await post({
      model: modelSelect.value,
      messages: history,
      stream: true,
      stream_options: { include_usage: true },
    });
    // A stream kept alive through a slow start opens before any node answers: its headers
    // name none, and the gateway names the node in a comment (": x-clawdbot-node NAME").
    let node = response.headers.get("X-Clawdbot-Node");
    if (!response.ok) {
      let message = response.status + " " + response.statusText;
      try { message = (await response.json()).error.message; } catch (e) { /* not JSON */ }
      answer.className = "msg error";
      answer.textContent = message;
      history.pop();
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let failed = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (line.startsWith(": x-clawdbot-node ")) node = line.slice(18).trim();
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) { failed = chunk.error.message || "the stream failed"; continue; }
          if (chunk.usage) usage = chunk.usage;
          const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
          if (delta && delta.content) {
            if (firstToken === null) firstToken = performance.now() - started;
            content += delta.content;
            answer.textContent = content;
            log.scrollTop = log.scrollHeight;
          }
        }
      }
    }
    const total = performance.now() - started;
    if (failed) {
      answer.classList.add("error");
      answer.textContent = content + (content ? "\n" : "") + failed;
    }
    history.push({ role: "assistant", content: content });
    const seconds = (total / 1000).toFixed(2) + " s";
    const tokens = usage ? usage.prompt_tokens + " in / " + usage.completion_tokens + " out" : null;
    const speed = usage && firstToken !== null && total > firstToken
      ? (usage.completion_tokens / ((total - firstToken) / 1000)).toFixed(1) + " tokens/s" : null;
    meta(answer, [
      node ? "node " + node : null,
      seconds,
      firstToken !== null ? "first token " + Math.round(firstToken) + " ms" : null,
      tokens,
      speed,
    ]);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    const text = input.value.trim();
    if (!text || send.disabled) return;
    input.value = "";
    send.disabled = true;
    ask(text).catch(function (error) { bubble("error", String(error.message || error)); })
      .finally(function () { send.disabled = false; input.focus(); });
  });
  input.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); form.requestSubmit(); }
  });
  document.getElementById("chat-clear").addEventListener("click", function () {
    history = [];
    log.querySelectorAll(".msg").forEach(function (m) { m.remove(); });
  });
})();
