// The agent-grid dashboard's only script. The server renders every page and every fragment; this follows
// the coordinator's event stream (/api/events) and, when an event concerns a part of the page, fetches that
// part again (its data-fragment URL) and swaps it in. Nothing reloads the page.
"use strict";

(() => {
  const body = document.body;
  const live = document.getElementById("live");
  const flash = document.getElementById("flash");
  const DEBOUNCE_MS = 150;
  const LOG_EVERY_MS = 3000;

  // --- durations tick while a run is active --------------------------------------------------------------
  const formatDuration = (ms) => {
    const total = Math.max(0, Math.floor(ms / 1000));
    const hours = Math.floor(total / 3600);
    const minutes = Math.floor((total % 3600) / 60);
    const seconds = total % 60;
    const pad = (n) => String(n).padStart(2, "0");
    if (hours) return `${hours}h ${pad(minutes)}m`;
    if (minutes) return `${minutes}m ${pad(seconds)}s`;
    return `${seconds}s`;
  };
  const tick = () => {
    for (const cell of document.querySelectorAll("[data-since]")) {
      const until = cell.dataset.until ? Date.parse(cell.dataset.until) : Date.now();
      cell.textContent = formatDuration(until - Date.parse(cell.dataset.since));
    }
  };
  setInterval(tick, 1000);

  // --- fragments: refetched on events, on a timer, or after an action ------------------------------------
  const timers = new WeakMap();
  const setLive = (state, text) => {
    if (!live) return;
    live.dataset.state = state;
    live.textContent = text;
  };
  const refresh = async (section) => {
    const response = await fetch(section.dataset.fragment, { credentials: "same-origin" });
    if (response.status === 401) {
      setLive("closed", "signed out");
      window.location.assign(`/dashboard/login?next=${encodeURIComponent(window.location.pathname)}`);
      return;
    }
    if (!response.ok) {
      section.dataset.stale = "true";
      return;
    }
    section.innerHTML = await response.text();
    delete section.dataset.stale;
    tick();
    document.dispatchEvent(new CustomEvent("fragment-refreshed", { detail: section }));
  };
  const schedule = (section, delay = DEBOUNCE_MS) => {
    clearTimeout(timers.get(section));
    timers.set(
      section,
      setTimeout(() => refresh(section).catch(() => (section.dataset.stale = "true")), delay),
    );
  };
  const concerns = (section, event) => {
    if (section.dataset.run && section.dataset.run !== event.run_id) return false;
    if (section.dataset.root && (!event.run || event.run.root !== section.dataset.root)) return false;
    return true;
  };
  for (const section of document.querySelectorAll("[data-refresh-every]")) {
    setInterval(() => schedule(section, 0), Number(section.dataset.refreshEvery) * 1000);
  }
  // Heartbeats update a run's cost and tokens without an event: refresh while something is active.
  for (const section of document.querySelectorAll("[data-refresh-active]")) {
    setInterval(() => {
      if (section.querySelector('[data-active="true"]')) schedule(section, 0);
    }, Number(section.dataset.refreshActive) * 1000);
  }

  // --- paused or not: the stream's control events are the truth --------------------------------------------
  const showPaused = (paused) => {
    body.dataset.paused = String(paused);
    for (const text of document.querySelectorAll("[data-paused-text]")) {
      text.textContent = paused ? "paused" : "active";
    }
  };

  // --- the event stream -------------------------------------------------------------------------------------
  if (body.dataset.events) {
    const source = new EventSource(body.dataset.events);
    source.addEventListener("open", () => setLive("live", "live"));
    source.addEventListener("error", () => {
      // A refused or broken stream is CLOSED (the session expired, say); otherwise the browser reconnects,
      // sending Last-Event-ID, and the stream resumes after the last event it delivered.
      if (source.readyState === EventSource.CLOSED) setLive("closed", "disconnected: reload to sign in");
      else setLive("reconnecting", "reconnecting");
    });
    source.addEventListener("run", (message) => {
      const event = JSON.parse(message.data);
      for (const section of document.querySelectorAll('[data-refresh-on~="run"]')) {
        if (concerns(section, event)) schedule(section);
      }
    });
    source.addEventListener("control", (message) => showPaused(JSON.parse(message.data).paused));
    source.addEventListener("resync", () => {
      for (const section of document.querySelectorAll("[data-fragment]")) schedule(section, 0);
    });
    window.addEventListener("pagehide", () => source.close());
  }

  // --- buttons that call the API ------------------------------------------------------------------------
  const say = (text, tone) => {
    if (!flash) return;
    flash.textContent = text;
    flash.dataset.tone = tone;
  };
  document.addEventListener("click", async (click) => {
    const button = click.target.closest("button[data-action]");
    if (!button) return;
    if (button.dataset.confirm && !window.confirm(button.dataset.confirm)) return;
    button.disabled = true;
    try {
      // Same-origin fetch: the session cookie goes along, and so does the Origin header the API checks.
      const response = await fetch(button.dataset.action, { method: "POST", credentials: "same-origin" });
      const text = await response.text();
      if (!response.ok) {
        say(`${button.textContent} failed: HTTP ${response.status} ${text}`, "bad");
        return;
      }
      say(`${button.textContent}: done`, "ok");
      if (button.dataset.refresh) {
        const section = document.getElementById(button.dataset.refresh);
        if (section) schedule(section, 0);
      }
    } catch (error) {
      say(`${button.textContent} failed: ${error}`, "bad");
    } finally {
      button.disabled = false;
    }
  });

  // --- the run page's log: the tail, again every few seconds while the run is active ---------------------------
  const log = document.querySelector("[data-log]");
  const logStatus = document.querySelector("[data-log-status]");
  const runActive = () => document.querySelector('[data-run-active="true"]') !== null;
  const loadLog = async () => {
    let response;
    try {
      response = await fetch(log.dataset.log, { credentials: "same-origin" });
    } catch (error) {
      logStatus.textContent = `Log unavailable: ${error}`;
      log.dataset.state = "unavailable";
      return;
    }
    if (!response.ok) {
      let reason = `HTTP ${response.status}`;
      try {
        const detail = (await response.json()).detail;
        if (detail) reason += `: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`;
      } catch {
        // not JSON: the status says enough
      }
      logStatus.textContent = `Log unavailable (${reason}).`;
      log.dataset.state = "unavailable";
      return;
    }
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = await response.text();
    log.dataset.state = "loaded";
    logStatus.textContent = runActive() ? "The latest output, while the run goes on." : "The end of the output.";
    if (atBottom) log.scrollTop = log.scrollHeight;
  };
  if (log && logStatus) {
    let wasActive = runActive();
    loadLog();
    const timer = setInterval(() => {
      const active = runActive();
      if (active || wasActive) loadLog(); // one last read after the run ends
      if (!active && !wasActive) clearInterval(timer);
      wasActive = active;
    }, LOG_EVERY_MS);
  }

  tick();
})();
