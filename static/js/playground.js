// The playground: post the form with fetch, read the server-sent events off the
// response body (a ReadableStream) and render them as they come: `start` (request id,
// request log link), `chunk` ({delta}), then `done` (usage, cost, route) or `error`
// (the error envelope; before the first chunk its details list the attempts).
(function () {
  "use strict";
  var form = document.getElementById("playground-form");
  if (!form) return;
  var answer = document.getElementById("answer");
  var state = document.getElementById("run-state");
  var errorBox = document.getElementById("run-error");
  var route = document.getElementById("route");
  var summary = document.getElementById("route-summary");
  var attemptsBody = document.getElementById("route-attempts");
  var logLink = document.getElementById("log-link");
  var send = document.getElementById("playground-send");
  var stop = document.getElementById("playground-stop");
  var controller = null;

  function text(tag, value, className) {
    var el = document.createElement(tag);
    el.textContent = value == null ? "" : String(value);
    if (className) el.className = className;
    return el;
  }

  function reset() {
    answer.textContent = "";
    answer.classList.remove("failed");
    errorBox.hidden = true;
    errorBox.textContent = "";
    route.hidden = true;
    summary.textContent = "";
    attemptsBody.textContent = "";
    logLink.hidden = true;
    form.querySelectorAll("[data-error-for]").forEach(function (p) { p.hidden = true; p.textContent = ""; });
    form.querySelectorAll(".field.has-error").forEach(function (f) { f.classList.remove("has-error"); });
  }

  function showAttempts(attempts) {
    (attempts || []).forEach(function (a, i) {
      var tr = document.createElement("tr");
      tr.appendChild(text("td", i + 1, "num"));
      tr.appendChild(text("td", a.provider));
      var outcome = document.createElement("td");
      outcome.appendChild(text("span", a.outcome, "pill " + (a.outcome === "success" ? "pill-success" : "pill-error")));
      tr.appendChild(outcome);
      tr.appendChild(text("td", a.status_code == null ? "—" : a.status_code, "num"));
      tr.appendChild(text("td", Math.round(a.latency_ms) + " ms", "num"));
      tr.appendChild(text("td", a.error || ""));
      attemptsBody.appendChild(tr);
    });
    route.hidden = false;
  }

  function addFact(name, value) {
    summary.appendChild(text("dt", name));
    summary.appendChild(text("dd", value));
  }

  function showError(envelope, afterChunks) {
    var error = (envelope && envelope.error) || { code: "error", message: "The request failed." };
    errorBox.textContent = (afterChunks ? "The stream broke: " : "") + error.message + " (" + error.code + ")";
    errorBox.hidden = false;
    answer.classList.add("failed");
    state.textContent = afterChunks ? "Ended with an error after part of the answer." : "Failed before any answer.";
    var attempts = error.details && error.details.attempts;
    if (attempts && attempts.length) showAttempts(attempts);
  }

  function showFieldErrors(envelope) {
    var fields = (envelope.error.details && envelope.error.details.fields) || {};
    Object.keys(fields).forEach(function (name) {
      var p = form.querySelector('[data-error-for="' + name + '"]');
      if (p) {
        p.textContent = fields[name].join(" ");
        p.hidden = false;
        var field = p.closest(".field");
        if (field) field.classList.add("has-error");
      }
    });
    errorBox.textContent = envelope.error.message;
    errorBox.hidden = false;
    state.textContent = "Not sent: fix the form.";
  }

  function handle(name, data, run) {
    if (name === "start") {
      state.textContent = "Routing request " + data.request_id + "…";
      logLink.querySelector("a").href = data.log_url;
    } else if (name === "chunk") {
      run.chunks += 1;
      answer.textContent += data.delta;
      state.textContent = "Streaming…";
    } else if (name === "done") {
      state.textContent = "Done.";
      addFact("Provider", data.provider);
      addFact("Model", data.model);
      addFact("Tokens", data.usage.prompt_tokens + " prompt + " + data.usage.completion_tokens + " completion");
      addFact("Cost", "$" + data.cost.amount);
      addFact("Time", Math.round(data.route.response_time_ms) + " ms");
      showAttempts(data.route.attempts);
    } else if (name === "error") {
      // A bad routing option is refused before routing: no record for the log to show.
      if (data.error && data.error.code === "validation_error") logLink.querySelector("a").setAttribute("href", "#");
      showError(data, run.chunks > 0);
    }
  }

  // One SSE block: "event: x\ndata: {...}" (the server sends one data line per event).
  function parseBlock(block) {
    var name = "message", data = "";
    block.split("\n").forEach(function (line) {
      if (line.indexOf("event:") === 0) name = line.slice(6).trim();
      else if (line.indexOf("data:") === 0) data += line.slice(5).replace(/^ /, "");
    });
    return data ? [name, JSON.parse(data)] : null;
  }

  async function run() {
    reset();
    controller = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    state.textContent = "Sending…";
    var current = { chunks: 0 };
    try {
      var response = await fetch(form.action, {
        method: "POST",
        body: new FormData(form),
        headers: { Accept: "text/event-stream" },
        credentials: "same-origin",
        signal: controller.signal,
      });
      if (!response.ok) {
        var envelope = null;
        try { envelope = await response.json(); } catch (e) { /* not JSON */ }
        if (envelope && envelope.error && envelope.error.code === "validation_error") showFieldErrors(envelope);
        else showError(envelope || { error: { code: "http_" + response.status, message: "The server answered " + response.status + "." } }, false);
        return;
      }
      var reader = response.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      for (;;) {
        var step = await reader.read();
        if (step.done) break;
        buffer += decoder.decode(step.value, { stream: true });
        var end;
        while ((end = buffer.indexOf("\n\n")) !== -1) {
          var event = parseBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
          if (event) handle(event[0], event[1], current);
        }
      }
      if (!logLink.querySelector("a").getAttribute("href").startsWith("#")) logLink.hidden = false;
    } catch (err) {
      if (err.name === "AbortError") state.textContent = "Stopped.";
      else showError({ error: { code: "network", message: String(err.message || err) } }, current.chunks > 0);
      if (!logLink.querySelector("a").getAttribute("href").startsWith("#")) logLink.hidden = false;
    } finally {
      send.disabled = false;
      stop.hidden = true;
      controller = null;
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (!controller) run();
  });
  stop.addEventListener("click", function () { if (controller) controller.abort(); });
})();
