// The Cubbi web page: sign in, the user's sessions, logs and terminals.
// Plain script, no build step.  Every URL is relative to <base href> (the
// service's base path), so the page works behind a proxy under a prefix,
// and a terminal's WebSocket is wss:// when the page is https://.
// Nothing here stores a credential: the service keeps the browser signed
// in with an HttpOnly cookie; the CSRF token lives in this variable only.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  let csrf = null;
  let pollTimer = null;
  let listAsked = 0; // the lists asked for, numbered, so an older answer never
  let listShown = 0; // replaces a newer one on the screen
  let listing = 0; // lists in flight: the poll skips its turn while one is
  const LIST_TIMEOUT = 30000; // ms: a list not answered by then is an error shown
  let logAbort = null;
  let termCount = 0;
  const terminals = new Map(); // tab id -> {term, fit, ws, pane, tab}
  let active = null;

  // -- the API --------------------------------------------------------------
  // Failures are also logged on the console (a message on the page is
  // replaced by the next one): what went wrong, and when, stays readable.
  async function call(method, path, body, timeout) {
    const headers = {};
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (csrf && method !== "GET") headers["X-Cubbi-CSRF"] = csrf;
    const ctl = timeout ? new AbortController() : null;
    const timer = ctl ? setTimeout(() => ctl.abort(), timeout) : null;
    let resp;
    try {
      resp = await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctl ? ctl.signal : undefined,
      });
    } catch (e) { // no answer at all: the network (err.unreached), or the timeout
      const timedOut = e.name === "AbortError";
      const err = new Error(timedOut
        ? `${method} ${path}: no answer from the service in ${timeout / 1000} s`
        : `${method} ${path}: the service could not be reached (${e.message})`);
      err.unreached = !timedOut;
      console.warn(`cubbi: ${err.message}`);
      throw err;
    } finally {
      if (timer) clearTimeout(timer);
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    if (!resp.ok) {
      const err = new Error((data && data.error) || `${method} ${path}: HTTP ${resp.status}`);
      err.status = resp.status;
      console.warn(`cubbi: ${method} ${path}: HTTP ${resp.status}: ${err.message}`);
      if (resp.status === 401 && path !== "auth/browser") signedOut();
      throw err;
    }
    return data;
  }

  // -- signing in and out -----------------------------------------------------
  function signedIn(who) {
    csrf = who.csrf;
    $("who").textContent = who.user;
    $("who").hidden = false;
    $("sign-out").hidden = false;
    $("signin").hidden = true;
    $("main").hidden = false;
    loadImages();
    refresh();
    if (!pollTimer) pollTimer = setInterval(poll, 2000);
  }

  function signedOut() {
    csrf = null;
    if (pollTimer) clearInterval(pollTimer);
    pollTimer = null;
    stopLog();
    for (const id of Array.from(terminals.keys())) closeTab(id);
    $("sessions").tBodies[0].replaceChildren(); // the next user's page starts empty
    for (const id of ["list-error", "close-error", "create-error"]) $(id).textContent = "";
    $("who").hidden = true;
    $("sign-out").hidden = true;
    $("main").hidden = true;
    $("signin").hidden = false;
    $("token").focus();
  }

  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault(); // never a form submission: the token stays out of URLs
    const field = $("token");
    const token = field.value.trim();
    field.value = "";
    $("signin-error").textContent = "";
    try {
      signedIn(await call("POST", "auth/browser", { token }));
    } catch (e) {
      $("signin-error").textContent = e.message;
    }
  });

  $("sign-out").addEventListener("click", async () => {
    try { await call("DELETE", "auth/browser"); } catch (e) { /* signed out anyway */ }
    signedOut();
  });

  // -- sessions -----------------------------------------------------------------
  function age(epoch) {
    if (!epoch) return "";
    const s = Math.max(0, Math.floor(Date.now() / 1000 - epoch));
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }

  function button(text, cls, onclick) {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = text;
    b.className = cls;
    b.addEventListener("click", onclick);
    return b;
  }

  function cell(text, cls) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (cls) td.className = cls;
    return td;
  }

  // rows are kept and updated in place (keyed by session id), so a button
  // is never replaced under the pointer by the next refresh
  function render(sessions) {
    const body = $("sessions").tBodies[0];
    const have = new Map(Array.from(body.rows, (tr) => [tr.dataset.id, tr]));
    const rows = sessions.map((s) => {
      let tr = have.get(s.id);
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.id = s.id;
        for (let i = 0; i < 5; i++) tr.append(cell(""));
        const actions = cell("", "actions");
        actions.append(button("Terminal", "open-terminal", () => openTerminal(tr.session)),
                       button("Log", "follow-log", () => followLog(tr.session)),
                       button("Close", "close-session", () => closeSession(tr.session, tr)));
        tr.append(actions);
      }
      tr.session = s;
      tr.dataset.name = s.name || "";
      const closing = tr.dataset.status === "closing";
      if (!closing) tr.dataset.status = s.status || "";
      const texts = [s.name, closing ? "closing" : s.status, s.image,
                     typeof s.project === "string" ? s.project : "", age(s.created_epoch)];
      texts.forEach((t, i) => {
        const td = tr.cells[i];
        const text = t == null ? "" : String(t);
        if (td.textContent !== text) td.textContent = text;
      });
      tr.cells[1].className = `status status-${s.status}`;
      return tr;
    });
    rows.forEach((tr, i) => { if (body.rows[i] !== tr) body.insertBefore(tr, body.rows[i] || null); });
    for (const tr of Array.from(body.rows)) if (!rows.includes(tr)) tr.remove();
    $("empty").hidden = sessions.length > 0;
  }

  // The list, asked for again.  Answers can come back out of order (each
  // request may take its own connection): one older than the list on the
  // screen is dropped, so a list asked for before a close never brings the
  // closed session back.
  async function refresh() {
    const asked = ++listAsked;
    listing++;
    try {
      const data = await call("GET", "sessions?all=1", undefined, LIST_TIMEOUT);
      if (asked < listShown) return;
      listShown = asked;
      $("list-error").textContent = "";
      render(data.sessions || []);
    } catch (e) {
      if (e.status !== 401 && asked >= listShown) $("list-error").textContent = e.message;
    } finally {
      listing--;
    }
  }

  // every 2 s, unless a list is still on its way (slow answers do not pile
  // up into the browser's few connections to the service, which the page's
  // other requests need too); a list never answered times out
  function poll() {
    if (!listing) refresh();
  }

  async function loadImages() {
    try {
      const data = await call("GET", "images");
      const list = $("images");
      list.replaceChildren(...(data.images || []).map((i) => {
        const o = document.createElement("option");
        o.value = i.name;
        return o;
      }));
    } catch (e) { /* the field takes any name */ }
  }

  $("create-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const req = { image: $("create-image").value.trim() };
    const project = $("create-project").value.trim();
    const name = $("create-name").value.trim();
    if (project) req.project = project;
    if (name) req.name = name;
    $("create-error").textContent = "";
    $("create-button").disabled = true;
    try {
      await call("POST", "sessions", req);
      $("create-name").value = "";
      await refresh();
    } catch (e) {
      $("create-error").textContent = e.message;
    } finally {
      $("create-button").disabled = false;
    }
  });

  // Close: the row says "closing" until the session leaves the list.  When
  // the service could not close it, the row shows its status again and the
  // reason stays on the page (#close-error, until the next close): the
  // next list does not wipe it, and Close can be clicked again.  A request
  // that got no answer (it may never have arrived: a connection a proxy or
  // the service closed before the browser sent it) is sent again, up to 3
  // times in all; a session the service no longer has is closed.
  async function closeSession(s, tr) {
    if (tr.dataset.status === "closing") return; // one close at a time per row
    tr.dataset.status = "closing";
    tr.cells[1].textContent = "closing";
    delete tr.dataset.error;
    $("close-error").textContent = "";
    const path = `sessions/${encodeURIComponent(s.id)}`;
    let failed = null;
    for (let attempt = 1; attempt <= 3; attempt++) {
      try {
        await call("DELETE", path);
        failed = null;
      } catch (e) {
        failed = e.status === 404 ? null : e;
        if (e.unreached && attempt < 3) continue;
      }
      break;
    }
    if (failed) {
      const now = tr.session || s; // as the last list had it
      tr.dataset.status = now.status || "";
      tr.cells[1].textContent = now.status || "";
      tr.dataset.error = failed.message;
      $("close-error").textContent = `could not close ${s.name || s.id}: ${failed.message}`;
      return;
    }
    for (const [id, t] of terminals) if (t.session === s.id) closeTab(id);
    await refresh();
  }

  // -- a session's log ------------------------------------------------------------
  function stopLog() {
    if (logAbort) logAbort.abort();
    logAbort = null;
  }

  $("logs-stop").addEventListener("click", () => { stopLog(); $("logs").hidden = true; });

  async function followLog(s) {
    stopLog();
    const ctl = new AbortController();
    logAbort = ctl;
    const out = $("logs-text");
    out.textContent = "";
    $("logs-name").textContent = s.name;
    $("logs").hidden = false;
    try {
      const resp = await fetch(`sessions/${encodeURIComponent(s.id)}/logs?follow=1&tail=200`,
                               { credentials: "same-origin", signal: ctl.signal });
      if (!resp.ok) throw new Error((await resp.json()).error);
      const reader = resp.body.getReader();
      const dec = new TextDecoder();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let nl;
        while ((nl = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, nl);
          buf = buf.slice(nl + 1);
          if (!line.trim()) continue; // a heartbeat
          const rec = JSON.parse(line);
          const atEnd = out.scrollTop + out.clientHeight >= out.scrollHeight - 4;
          out.append((rec.line !== undefined ? rec.line : rec.error || line) + "\n");
          if (atEnd) out.scrollTop = out.scrollHeight;
        }
      }
    } catch (e) {
      if (e.name !== "AbortError") out.append(`[${e.message}]\n`);
    }
  }

  // -- terminals ----------------------------------------------------------------
  function select(id) {
    active = id;
    for (const [tid, t] of terminals) {
      const on = tid === id;
      t.pane.hidden = !on;
      t.tab.setAttribute("aria-selected", on ? "true" : "false");
    }
    const t = terminals.get(id);
    if (t) {
      fitActive();
      t.term.focus();
    }
  }

  function fitActive() {
    const t = terminals.get(active);
    if (t && !t.pane.hidden) {
      try { t.fit.fit(); } catch (e) { /* not laid out yet */ }
    }
  }

  function closeTab(id) {
    const t = terminals.get(id);
    if (!t) return;
    terminals.delete(id);
    try { t.ws.close(); } catch (e) { /* closed */ }
    t.term.dispose();
    t.pane.remove();
    t.tab.remove();
    if (active === id) {
      const next = Array.from(terminals.keys()).pop();
      if (next !== undefined) select(next);
      else { active = null; $("terminals").hidden = true; }
    }
  }

  function openTerminal(s) {
    const id = `t${++termCount}`;
    $("terminals").hidden = false;
    const pane = document.createElement("div");
    pane.className = "pane";
    pane.id = `pane-${id}`;
    pane.dataset.session = s.id;
    pane.dataset.state = "connecting";
    $("panes").append(pane);
    const tab = document.createElement("button");
    tab.type = "button";
    tab.className = "tab";
    tab.setAttribute("role", "tab");
    tab.dataset.pane = pane.id;
    const label = document.createElement("span");
    label.textContent = `${s.name} #${termCount}`;
    const x = document.createElement("span");
    x.className = "x";
    x.textContent = "×";
    x.title = "close this terminal (ends its shell)";
    x.addEventListener("click", (ev) => { ev.stopPropagation(); closeTab(id); });
    tab.append(label, x);
    tab.addEventListener("click", () => select(id));
    $("tabs").append(tab);

    const term = new Terminal({ cursorBlink: true, fontSize: 14, scrollback: 5000,
                                fontFamily: "DejaVu Sans Mono, Menlo, Consolas, monospace" });
    const fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    const t = { term, fit, pane, tab, ws: null, session: s.id };
    terminals.set(id, t);
    term.open(pane);
    select(id);
    pane.dataset.rows = term.rows;
    pane.dataset.cols = term.cols;

    const url = new URL(`sessions/${encodeURIComponent(s.id)}/connect?tty=1&rows=${term.rows}` +
                        `&cols=${term.cols}&term=xterm-256color`, document.baseURI);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(url.href);
    ws.binaryType = "arraybuffer";
    t.ws = ws;
    const enc = new TextEncoder();
    const send = (data) => { if (ws.readyState === WebSocket.OPEN) ws.send(data); };
    ws.onopen = () => { pane.dataset.state = "open"; };
    ws.onmessage = (ev) => {
      if (typeof ev.data === "string") {
        let msg = {};
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if (msg.type === "exit") {
          term.write(`\r\n[the shell ended${msg.code == null ? "" : ` with status ${msg.code}`}]\r\n`);
          pane.dataset.state = "exited";
          ws.close();
        } else if (msg.type === "error") {
          term.write(`\r\n[${msg.error}]\r\n`);
          pane.dataset.state = "error";
        }
        return;
      }
      const bytes = new Uint8Array(ev.data);
      if (bytes.length > 1) term.write(bytes.subarray(1));
    };
    ws.onclose = () => {
      if (pane.dataset.state === "open" || pane.dataset.state === "connecting") {
        term.write("\r\n[disconnected: open a terminal again for a new shell]\r\n");
        pane.dataset.state = "closed";
      }
    };
    term.onData((d) => send(enc.encode(d)));
    term.onBinary((d) => send(Uint8Array.from(d, (c) => c.charCodeAt(0) & 255)));
    term.onResize(({ rows, cols }) => {
      pane.dataset.rows = rows;
      pane.dataset.cols = cols;
      send(JSON.stringify({ type: "resize", rows, cols }));
    });
  }

  new ResizeObserver(() => fitActive()).observe($("panes"));
  window.addEventListener("resize", fitActive);

  // -- start: signed in already (the cookie), or the sign-in form ---------------------
  call("GET", "auth/config").then((conf) => {
    $("sso").hidden = conf.provider !== "oidc"; // the provider's login, then back here
  }, () => {});
  call("GET", "auth/browser").then(signedIn, () => signedOut());
})();
