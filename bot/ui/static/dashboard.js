// conveyor's dashboard: local times, live updates over /events, the agent's log tail,
// and the Stop / Retry buttons. No framework, no build step; the pages work without it
// (they reload themselves every few seconds instead).
(function () {
  "use strict";

  var READ_KEY = "conveyor.readToken";
  var ADMIN_KEY = "conveyor.adminToken";
  var body = document.body;
  var page = body.getAttribute("data-page");

  // -- the read token: taken from ?token= once, kept in this tab, never left in the URL --
  var params = new URLSearchParams(window.location.search);
  var fromUrl = params.get("token");
  if (fromUrl !== null) {
    params.delete("token");
    var rest = params.toString();
    window.history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : "") + window.location.hash);
    if (page === "refused") {
      sessionStorage.removeItem(READ_KEY);  // that token was refused: do not retry it
    } else if (fromUrl) {
      sessionStorage.setItem(READ_KEY, fromUrl);
    }
  }
  var readToken = sessionStorage.getItem(READ_KEY) || "";

  if (page === "refused") {
    if (readToken && fromUrl === null) {
      window.location.replace(withToken(window.location.pathname + window.location.search));
    }
    return;
  }

  function withToken(url) {
    if (!readToken) return url;
    return url + (url.indexOf("?") >= 0 ? "&" : "?") + "token=" + encodeURIComponent(readToken);
  }

  function readHeaders() {
    return readToken ? { "Authorization": "Bearer " + readToken } : {};
  }

  // Links inside the dashboard carry the token when followed (it is never written into the page).
  document.addEventListener("click", function (ev) {
    var link = ev.target.closest ? ev.target.closest("a[href^='/']") : null;
    if (!link || !readToken || ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey) return;
    ev.preventDefault();
    window.location.assign(withToken(link.getAttribute("href")));
  });

  // -- times: the viewer's local time, UTC on hover -------------------------------------
  function localise(root) {
    root.querySelectorAll("time[datetime]").forEach(function (el) {
      var when = new Date(el.getAttribute("datetime"));
      if (isNaN(when.getTime())) return;
      el.textContent = when.toLocaleString();
    });
    tick(root);
  }

  function elapsedText(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    if (m) return m + "m " + String(s).padStart(2, "0") + "s";
    return s + " s";
  }

  function tick(root) {
    var now = Date.now();
    (root || document).querySelectorAll(".elapsed[data-since]").forEach(function (el) {
      var since = new Date(el.getAttribute("data-since")).getTime();
      if (!isNaN(since)) el.textContent = elapsedText((now - since) / 1000);
    });
  }

  localise(document);
  window.setInterval(function () { tick(document); }, 1000);

  var liveState = document.getElementById("live-state");
  function say(text) { if (liveState) liveState.textContent = text; }

  // -- live updates: /events says something changed, the changing part is fetched again --
  var live = document.getElementById("live");
  var taskId = body.getAttribute("data-task-id");
  var refreshTimer = null, refreshing = false, again = false;

  function refresh() {
    if (!live) return;
    if (refreshing) { again = true; return; }
    refreshing = true;
    fetch(live.getAttribute("data-live-url"), { headers: readHeaders(), cache: "no-store" })
      .then(function (answer) {
        if (!answer.ok) throw new Error("the server answered " + answer.status);
        return answer.text();
      })
      .then(function (html) {
        live.innerHTML = html;
        localise(live);
        afterRefresh();
      })
      .catch(function (err) { say("Could not refresh: " + err.message); })
      .then(function () {
        refreshing = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {
    if (refreshTimer) return;
    refreshTimer = window.setTimeout(function () { refreshTimer = null; refresh(); }, 100);
  }

  function relevant(data) {
    return page !== "task" || data.task_id === null || String(data.task_id) === taskId;
  }

  if (window.EventSource && live) {
    say("Connecting…");
    var source = new EventSource(withToken("/events"));
    source.addEventListener("open", function () { say("Live"); schedule(); });
    source.addEventListener("error", function () { say("Reconnecting…"); });
    ["stage", "job", "stop", "audit"].forEach(function (kind) {
      source.addEventListener(kind, function (ev) {
        var data = {};
        try { data = JSON.parse(ev.data); } catch (e) { return; }
        if (relevant(data)) schedule();
      });
    });
    source.addEventListener("resync", schedule);
    window.addEventListener("pagehide", function () { source.close(); });
  } else if (live) {
    say("Live updates need EventSource; reload to refresh.");
  }

  // -- the agent's log, live ------------------------------------------------------------
  var logBox = document.getElementById("log");
  var logState = document.getElementById("log-state");
  var logSource = null, logJob = "";
  var MAX_LOG_CHARS = 200000;

  function followLog(job) {
    if (!logBox || !job || job === logJob) return;
    if (logSource) logSource.close();
    if (logJob) logBox.textContent += "\n── job " + job + " ──\n";
    else logBox.textContent = "";
    logJob = job;
    var label = document.getElementById("log-job-id");
    if (label) label.textContent = job;
    logSource = new EventSource(withToken("/ui/tasks/" + encodeURIComponent(taskId) + "/log?job=" + encodeURIComponent(job)));
    logSource.addEventListener("log", function (ev) {
      var text = "";
      try { text = JSON.parse(ev.data).text; } catch (e) { return; }
      var atEnd = logBox.scrollTop + logBox.clientHeight >= logBox.scrollHeight - 4;
      var all = logBox.textContent + text;
      logBox.textContent = all.length > MAX_LOG_CHARS ? all.slice(all.length - MAX_LOG_CHARS) : all;
      if (atEnd) logBox.scrollTop = logBox.scrollHeight;
      if (logState) logState.textContent = "Following job " + job + ".";
    });
    logSource.addEventListener("end", function () {
      logSource.close();
      if (logState) logState.textContent = "Job " + job + " has finished; this is its whole log.";
    });
  }

  function afterRefresh() {
    var state = document.getElementById("task-state");
    if (!state) return;
    followLog(state.getAttribute("data-log-job"));
    var actions = document.getElementById("stop-button");
    var stage = state.getAttribute("data-stage");
    if (actions && (stage === "done" || stage === "cancelled")) actions.disabled = true;
  }

  if (page === "task") afterRefresh();

  // -- Stop and Retry: the admin token once per tab, sent as X-Admin-Token --------------
  var form = document.getElementById("token-form");
  var tokenInput = document.getElementById("admin-token");
  var answerBox = document.getElementById("action-answer");
  var pending = null;

  function act(action) {
    var token = sessionStorage.getItem(ADMIN_KEY);
    if (!token) {
      pending = action;
      form.hidden = false;
      tokenInput.focus();
      return;
    }
    answerBox.textContent = "Sending " + action + "…";
    answerBox.className = "";
    fetch("/tasks/" + encodeURIComponent(taskId) + "/" + action, {
      method: "POST",
      headers: { "X-Admin-Token": token },
      cache: "no-store",
    }).then(function (answer) {
      return answer.json().catch(function () { return {}; }).then(function (doc) {
        if (answer.ok) {
          var words = doc.status || "OK";
          answerBox.textContent = words + (doc.stop_id ? " · stop " + doc.stop_id : "") + " (HTTP " + answer.status + ")";
          answerBox.className = "ok";
        } else {
          if (answer.status === 401 || answer.status === 403) sessionStorage.removeItem(ADMIN_KEY);
          answerBox.textContent = "Refused (HTTP " + answer.status + "): " + (doc.error || "no reason given");
          answerBox.className = "error-text";
        }
        schedule();
      });
    }).catch(function (err) {
      answerBox.textContent = "Could not reach the server: " + err.message;
      answerBox.className = "error-text";
    });
  }

  document.querySelectorAll("[data-action]").forEach(function (button) {
    button.addEventListener("click", function () { act(button.getAttribute("data-action")); });
  });
  if (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var token = tokenInput.value.trim();
      if (!token) return;
      sessionStorage.setItem(ADMIN_KEY, token);
      tokenInput.value = "";
      form.hidden = true;
      if (pending) { var action = pending; pending = null; act(action); }
    });
    document.getElementById("token-cancel").addEventListener("click", function () {
      form.hidden = true;
      pending = null;
      tokenInput.value = "";
    });
  }
})();
