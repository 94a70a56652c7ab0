/* The chat page (templates/betaassi_django/chat.html, docs/pages.md): one WebSocket to the session
   (docs/websocket.md), assistant replies rendered as Markdown (markdown.js) while they stream, at most once per
   animation frame, user messages as plain text. */
(() => {
  "use strict";
  const renderMarkdown = window.betaassiMarkdown.render;
  const $ = (id) => document.getElementById(id);
  const path = JSON.parse($("socket-path").textContent);
  const readOnly = JSON.parse($("read-only-flag").textContent);
  const log = $("log"), notice = $("notice"), statusEl = $("status"), announcer = $("announce");
  const sendButton = $("send"), stopButton = $("stop"), reconnectButton = $("reconnect");
  const input = $("content"), form = $("composer");
  const FINAL_CODES = {4401: "Your login ended (logged out, password changed or account deactivated); reload the page.",
                       4403: "You may no longer read this session.",
                       4404: "This session does not exist.", 4429: "Too many messages; reload the page."};
  let socket = null, retry = 0, finished = false, retryTimer = 0, activeRun = null;

  // --- Messages --------------------------------------------------------------------------------------------
  const entries = new Map();  // message id or run id -> {el, body, tools, text, role}
  const pending = new Set();
  let frameRequested = false;

  function entry(key, role) {
    let found = entries.get(key);
    if (!found) {
      const el = document.createElement("article");
      el.className = "msg " + role;
      const body = document.createElement("div");
      body.className = "body";
      el.append(body);
      log.append(el);
      followLog();
      found = {el, body, tools: null, text: "", role};
      entries.set(key, found);
    }
    return found;
  }
  // The log follows new text while the reader is at its bottom; scrolled up, they keep their place.
  let follow = true;
  log.addEventListener("scroll", () => { follow = log.scrollHeight - log.scrollTop - log.clientHeight < 48; });
  const followLog = () => { if (follow) log.scrollTop = log.scrollHeight; };
  new ResizeObserver(followLog).observe(log);  // the keyboard opening shrinks the log: keep its end in view
  function show(found, text, now = false) {
    found.text = text;
    if (found.role !== "assistant") {
      found.body.textContent = text;
      followLog();
    } else if (now) {
      renderMarkdown(found.body, text);
    } else {
      pending.add(found);
      if (!frameRequested) { frameRequested = true; requestAnimationFrame(flush); }
    }
  }
  function flush() {  // at most once per frame, however many deltas arrived since the last
    frameRequested = false;
    for (const found of pending) renderMarkdown(found.body, found.text);
    pending.clear();
    followLog();
  }
  function endNote(found, text) {
    const note = document.createElement("p");
    note.className = "end-note";
    note.textContent = text;
    found.el.append(note);
    followLog();
  }
  function showCited(found, message, now = false) {  // file_search's citations: each marker reads [n], listed below
    const cited = message.citations || [];
    show(found, cited.reduce((text, c, i) => text.split(c.text).join(`[${i + 1}]`), message.content), now);
    if (cited.length) citationList(found, cited);
  }
  function citationList(found, cited) {
    const list = document.createElement("ol");
    list.className = "citations";
    list.setAttribute("aria-label", "Sources");
    for (const c of cited) {
      const item = document.createElement("li");
      const name = document.createElement("span");
      name.className = "file";
      name.textContent = c.file_name || c.file_id;
      item.append(name);
      if (c.quote) {
        const quote = document.createElement("q");
        quote.textContent = c.quote;
        item.append(" ", quote);
      }
      list.append(item);
    }
    found.el.append(list);
    followLog();
  }
  function toolLine(runId, callId, name) {
    const found = entry(runId, "assistant");
    if (!found.tools) {
      found.tools = document.createElement("ul");
      found.tools.className = "tools";
      found.el.prepend(found.tools);
    }
    let line = found.tools.querySelector(`li[data-call="${CSS.escape(callId)}"]`);
    if (!line) {
      line = document.createElement("li");
      line.dataset.call = callId;
      found.tools.append(line);
      followLog();
    }
    return line;
  }

  // --- Page state ------------------------------------------------------------------------------------------
  function announce(text) {
    announcer.textContent = "";
    setTimeout(() => { announcer.textContent = text; }, 50);
  }
  function keepFocus(button) {  // a control about to hide hands the keyboard focus to the composer
    if (document.activeElement === button && !input.disabled) input.focus();
  }
  function setRun(runId) {
    activeRun = runId;
    if (!runId) keepFocus(stopButton);
    stopButton.hidden = !runId || readOnly;
    stopButton.disabled = false;
    stopButton.textContent = "Stop";
  }
  function setStatus(text, connected, canReconnect = false) {
    statusEl.textContent = text;
    statusEl.className = connected ? "connected" : "";
    sendButton.disabled = !connected || readOnly;
    if (!canReconnect) keepFocus(reconnectButton);
    reconnectButton.hidden = !canReconnect;
  }
  function showNotice(text, isError) {
    notice.textContent = text;
    notice.className = isError ? "error" : "";
  }
  function describe(session) {
    $("session-kind").textContent =
      session.kind === "manyshots" ? `last ${session.context_messages} messages` :
      session.kind === "oneshot" ? "one-shot" : "full history";
    if (session.model) $("session-model").textContent = session.model;
  }
  function endRun(runId) {
    const found = runId && entries.get(runId);
    if (found) found.el.classList.remove("streaming");
    if (!runId || runId === activeRun) setRun(null);
    return found;
  }

  const handlers = {
    "session.ready"(frame) {
      log.replaceChildren();
      entries.clear();
      pending.clear();
      for (const m of frame.history) showCited(entry(m.id, m.role === "user" ? "user" : "assistant"), m, true);
      follow = true;
      followLog();
      describe(frame.session);
      retry = 0;
      setRun(null);
      setStatus("connected", true);
    },
    "message.created"(frame) {
      const m = frame.message;
      show(entry(m.id, m.role === "user" ? "user" : "assistant"), m.content);
    },
    "run.started"(frame) {
      entry(frame.run_id, "assistant").el.classList.add("streaming");
      setRun(frame.run_id);
    },
    "message.delta"(frame) {
      const found = entry(frame.run_id, "assistant");
      found.el.classList.add("streaming");
      show(found, found.text + frame.delta);
      if (activeRun !== frame.run_id) setRun(frame.run_id);
    },
    "message.completed"(frame) {
      const found = entry(frame.run_id, "assistant");
      showCited(found, frame.message);
      entries.set(frame.message.id, found);
      endRun(frame.run_id);
      entries.delete(frame.run_id);  // the run may go on (function calls): its next message gets a bubble of its own
      announce("Reply finished.");
    },
    "run.failed"(frame) {
      const found = endRun(frame.run_id) || entry("failed-" + Date.now(), "assistant");
      if (pending.delete(found)) renderMarkdown(found.body, found.text);  // all that came, before its end note
      if (frame.status === "cancelled") {  // stopped: the partial reply stays as it was
        found.el.classList.add("stopped");
        endNote(found, "Stopped");
        announce("Reply stopped.");
      } else {
        found.el.classList.add("failed");
        endNote(found, "The reply failed: " + frame.error);
        announce("The reply failed.");
      }
    },
    "tool.started"(frame) {
      if (activeRun !== frame.run_id) setRun(frame.run_id);  // a message completed before the call: still running
      const line = toolLine(frame.run_id, frame.call_id, frame.name);
      line.className = "running";
      line.textContent = `Calling ${frame.name}…`;
    },
    "tool.completed"(frame) {
      const line = toolLine(frame.run_id, frame.call_id, frame.name);
      line.className = frame.ok ? "done" : "failed";
      line.textContent = `${frame.name} ${frame.ok ? "done" : "failed"}`;
    },
    "session.updated"(frame) { describe(frame.session); showNotice("The session's settings changed.", false); },
    "session.deleted"() { finished = true; showNotice("This session was deleted.", true); },
    "error"(frame) {
      showNotice(`${frame.message} (${frame.code})`, true);
      if (frame.code === "no_active_run") setRun(null);
    },
  };

  // --- The socket -----------------------------------------------------------------------------------------
  function connect() {
    clearTimeout(retryTimer);
    if (socket && socket.readyState <= WebSocket.OPEN) return;  // connecting or open already
    const scheme = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(scheme + location.host + path);
    socket.onmessage = (event) => {
      const frame = JSON.parse(event.data);
      (handlers[frame.type] || (() => {}))(frame);
    };
    socket.onclose = (event) => {
      setRun(null);
      if (FINAL_CODES[event.code]) { finished = true; showNotice(FINAL_CODES[event.code], true); }
      if (finished) { setStatus("closed", false); return; }
      const wait = Math.min(10000, 500 * 2 ** retry++);
      setStatus(`disconnected; reconnecting in ${Math.round(wait / 1000)} s…`, false, true);
      retryTimer = setTimeout(connect, wait);
    };
  }
  const sendFrame = (frame) => {
    if (!socket || socket.readyState !== WebSocket.OPEN) return false;
    socket.send(JSON.stringify(frame));
    return true;
  };
  function stop() {
    if (!activeRun || readOnly || stopButton.disabled) return;
    if (sendFrame({type: "run.cancel", run_id: activeRun})) {
      stopButton.disabled = true;
      stopButton.textContent = "Stopping…";
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const content = input.value.trim();
    if (readOnly || !content || !sendFrame({type: "user.message", content})) return;
    input.value = "";
    follow = true;  // what one sends, and its reply, are shown
    showNotice("", false);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); form.requestSubmit(); }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && activeRun) { event.preventDefault(); stop(); }
  });
  stopButton.addEventListener("click", stop);
  reconnectButton.addEventListener("click", () => {
    retry = 0;
    statusEl.textContent = "reconnecting…";
    connect();
  });
  log.addEventListener("click", (event) => {
    const button = event.target.closest("button.copy");
    if (!button) return;
    const code = button.closest(".code-block").querySelector("pre").textContent;
    copyText(code).then(() => { button.textContent = "Copied"; announce("Code copied."); },
                        () => { button.textContent = "Copy failed"; });
    setTimeout(() => { button.textContent = "Copy"; }, 2000);
  });
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
    const area = document.createElement("textarea");  // plain http on another host: the old way
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.append(area);
    area.select();
    const ok = document.execCommand("copy");
    area.remove();
    return ok ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }
  connect();
})();
