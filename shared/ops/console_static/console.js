// ml-connector operator console. No framework, no CDN: served by the function app itself.
// Data comes from the keyed routes under manage/console/api/ and the records API (manage/records,
// manage/masterdata/sync); the function key is kept in sessionStorage (this tab only) and sent as
// the x-functions-key header, never in a URL. Everything shown is set as text (no innerHTML).
"use strict";

(function () {
  const KEY = "mlConnectorFunctionKey";
  const base = location.pathname.replace(/\/+$/, "");          // .../api/manage/console
  const manage = base.replace(/\/console$/, "");               // .../api/manage
  const view = document.getElementById("view");
  const statusLine = document.getElementById("status");
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
  const timeFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  const STATE_NAMES = { done: "Done", failed: "Failed", dead_lettered: "Dead-lettered", in_progress: "In progress" };
  let overviewWindow = "24h";

  // -- helpers ---------------------------------------------------------------------------------------
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function when(iso) {
    if (!iso) return "–";
    const date = new Date(iso);
    return isNaN(date) ? String(iso) : timeFormat.format(date);
  }
  function badge(state) {
    const known = STATE_NAMES[state] ? state : "other";
    return el("span", { class: `badge b-${known}`, text: STATE_NAMES[state] || state || "–" });
  }
  function say(text) { statusLine.textContent = text || ""; }
  function show(...nodes) { view.replaceChildren(...nodes); }
  function route() {
    const hash = location.hash.replace(/^#\/?/, "");
    const [path, query] = hash.split("?");
    return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(query || "") };
  }
  function go(hash) { if (location.hash === hash) render(); else location.hash = hash; }

  class KeyRefused extends Error {}
  async function call(method, path, params) {
    const key = sessionStorage.getItem(KEY);
    if (!key) throw new KeyRefused("no key");
    const url = new URL(path, location.origin);
    for (const [name, value] of Object.entries(params || {})) if (value) url.searchParams.set(name, value);
    let response;
    try {
      response = await fetch(url, { method, headers: { "x-functions-key": key, "Accept": "application/json" },
                                    credentials: "same-origin", cache: "no-store" });
    } catch (err) {
      // also what an expired Entra sign-in looks like to fetch (a redirect to another origin)
      throw new Error("The connector did not answer. Is the app running? If you signed in with Entra ID, the sign-in may have expired: reload the page. (" + err.message + ")");
    }
    if (response.status === 401 || response.status === 403) throw new KeyRefused(String(response.status));
    let body = null;
    try { body = await response.json(); } catch (err) { body = null; }
    return { status: response.status, body: body || {} };
  }
  async function load(path, params) {
    const { status, body } = await call("GET", path, params);
    if (status >= 400) throw new Error(body.error || `The connector answered HTTP ${status}.`);
    return body;
  }

  // -- the key -----------------------------------------------------------------------------------------
  const keyPanel = document.getElementById("key-panel");
  const keyError = document.getElementById("key-error");
  const forget = document.getElementById("forget-key");
  function askForKey(message) {
    sessionStorage.removeItem(KEY);
    forget.hidden = true;
    view.replaceChildren();
    keyPanel.hidden = false;
    keyError.hidden = !message;
    keyError.textContent = message || "";
    say("");
    document.getElementById("key-input").focus();
  }
  document.getElementById("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = document.getElementById("key-input");
    sessionStorage.setItem(KEY, input.value.trim());
    input.value = "";
    keyPanel.hidden = true;
    forget.hidden = false;
    render();
  });
  forget.addEventListener("click", () => askForKey(""));

  // -- confirmation dialog -------------------------------------------------------------------------------
  function confirmAction(title, text, okLabel) {
    const dialog = document.getElementById("confirm");
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    document.getElementById("confirm-ok").textContent = okLabel;
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      document.getElementById("confirm-cancel").focus();
    });
  }

  // -- overview ------------------------------------------------------------------------------------------
  async function renderOverview(fresh) {
    const data = await load(`${base}/api/overview`, { fresh: fresh ? "true" : "" });
    const counts = data.counts[overviewWindow];
    const windows = el("div", { class: "windows", role: "group", "aria-label": "Time window" },
      ["24h", "7d", "30d"].map((w) => el("button", {
        type: "button", "aria-pressed": String(w === overviewWindow), "data-window": w,
        text: { "24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days" }[w],
        onclick: () => { overviewWindow = w; render(); } })));
    const head = el("tr", {}, el("th", { scope: "col", text: "Flow" }),
      data.states.map((s) => el("th", { scope: "col", class: "num", text: STATE_NAMES[s] })));
    const rows = data.flows.map((flow) => el("tr", { "data-flow": flow.kind },
      el("th", { scope: "row", text: flow.name }),
      data.states.map((s) => {
        const n = counts[flow.kind][s];
        const cell = n ? el("a", { class: "count-link", href: `#/records?kind=${flow.kind}&state=${s}&time=${overviewWindow}`,
                                   text: String(n), "aria-label": `${n} ${STATE_NAMES[s]} ${flow.name}` })
                       : el("span", { class: "zero", text: "0" });
        return el("td", { class: "num", "data-state": s }, cell);
      })));
    const health = data.health;
    const checks = Object.entries(health.checks || {}).map(([name, check]) => el("tr", {},
      el("td", { text: name }), el("td", {}, el("span", { class: `badge ${check.ok ? "b-ok" : "b-bad"}`, text: check.ok ? "OK" : "Failed" })),
      el("td", { class: "num", text: `${check.ms} ms` }), el("td", { text: check.error || check.name || "" })));
    const runs = data.runs.map((run) => el("tr", { "data-run": run.name },
      el("th", { scope: "row", text: run.title }),
      el("td", { text: run.ran ? when(run.finished) : "not run yet" }),
      el("td", {}, run.ran ? el("span", { class: `badge ${run.outcome === "failed" ? "b-bad" : "b-ok"}`, text: run.outcome }) : ""),
      el("td", { text: run.summary || "" })));
    const refresh = el("button", { type: "button", id: "recount", onclick: () => renderOverview(true).catch(() => render()) }, "Count again");
    const sync = el("button", { type: "button", id: "sync-masterdata", onclick: syncMasterData }, "Sync master data now");
    show(
      el("h1", {}, "Overview"),
      el("section", { class: "panel", "aria-labelledby": "counts-title" },
        el("h2", { id: "counts-title" }, "Records by flow and state"), windows,
        el("span", { class: "t-meta", id: "counted" }, ` counted ${when(data.counted)} `), refresh,
        el("div", { class: "scroll" }, el("table", { id: "counts" }, el("thead", {}, head), el("tbody", {}, rows)))),
      el("div", { class: "grid" },
        el("section", { class: "panel", "aria-labelledby": "health-title" },
          el("h2", { id: "health-title" }, "Health ", el("span", { class: `badge ${health.status === "ok" ? "b-ok" : "b-bad"}`,
                                                                     text: health.status === "ok" ? "all checks pass" : "failing: " + health.failed.join(", ") })),
          el("div", { class: "scroll" }, el("table", { id: "health" }, el("tbody", {}, checks)))),
        el("section", { class: "panel", "aria-labelledby": "runs-title" },
          el("h2", { id: "runs-title" }, "Scheduled jobs: last run"),
          el("div", { class: "scroll" }, el("table", { id: "runs" },
            el("thead", {}, el("tr", {}, ["Job", "Finished", "Outcome", "What it did"].map((t) => el("th", { scope: "col", text: t })))),
            el("tbody", {}, runs))),
          el("p", {}, sync, " ", el("span", { id: "sync-result", role: "status" })))),
    );
    say(`Updated ${when(data.now)}.`);
  }

  async function syncMasterData() {
    if (!await confirmAction("Sync master data now?", "Imports vendors, accounts and dimensions from Business Central into Basware for every mapped company. It runs in the background; records that did not change are not sent again.", "Sync now")) return;
    const out = document.getElementById("sync-result");
    out.textContent = "Starting…";
    const { status, body } = await call("POST", `${manage}/masterdata/sync`, { async: "true" });
    out.textContent = status === 202 ? `Started for ${(body.enqueued || []).length} compan${(body.enqueued || []).length === 1 ? "y" : "ies"}; the last run above updates when it has finished.`
                                     : (body.error || `The connector answered HTTP ${status}.`);
  }

  // -- records list ------------------------------------------------------------------------------------
  function option(value, label, selected) { return el("option", { value, selected: value === selected }, label); }
  async function renderRecords(params) {
    const filters = { kind: params.get("kind") || "", state: params.get("state") || "", time: params.get("time") || "",
                      q: params.get("q") || "", next: params.get("next") || "" };
    const form = el("form", { class: "filters panel", id: "filters", role: "search" },
      el("div", {}, el("label", { for: "f-kind" }, "Flow"), el("select", { id: "f-kind", name: "kind" },
        option("", "All flows", filters.kind), option("invoice", "Invoices", filters.kind), option("payment", "Payments", filters.kind),
        option("masterdata", "Master data", filters.kind), option("purchaseorder", "Purchase orders", filters.kind))),
      el("div", {}, el("label", { for: "f-state" }, "State"), el("select", { id: "f-state", name: "state" },
        option("", "Any state", filters.state), Object.entries(STATE_NAMES).map(([v, l]) => option(v, l, filters.state)))),
      el("div", {}, el("label", { for: "f-time" }, "Changed"), el("select", { id: "f-time", name: "time" },
        option("", "Any time", filters.time), option("24h", "Last 24 hours", filters.time), option("7d", "Last 7 days", filters.time),
        option("30d", "Last 30 days", filters.time))),
      el("div", { class: "grow" }, el("label", { for: "f-q" }, "Search: Basware invoice id, invoice number, vendor or BC document number"),
        el("input", { id: "f-q", name: "q", type: "search", value: filters.q, autocomplete: "off" })),
      el("button", { type: "submit", class: "primary" }, "Show"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const next = new URLSearchParams();
      for (const name of ["kind", "state", "time", "q"]) { const v = form.elements[name].value.trim(); if (v) next.set(name, v); }
      go("#/records?" + next.toString());
    });
    show(el("h1", {}, "Records"), form, el("p", { class: "status", text: "Loading…" }));
    const page = await load(`${base}/api/records`, { kind: filters.kind, state: filters.state, time: filters.time, q: filters.q,
                                                     next: filters.next, limit: "50" });
    const rows = page.records.map((r) => el("tr", { "data-id": r.id },
      el("td", {}, el("a", { href: `#/record/${encodeURIComponent(r.kind)}/${encodeURIComponent(r.id)}`, text: r.invoice_number || r.basware_id || r.id.slice(0, 8) })),
      el("td", { text: r.kind }), el("td", {}, badge(r.bucket), r.replay_pending ? el("span", { class: "t-meta", text: " replay pending" }) : ""),
      el("td", { class: "mono hide-narrow", text: r.basware_id || "–" }), el("td", { text: r.vendor || "–" }),
      el("td", { text: r.bc_number || "–" }), el("td", { text: when(r.updated) }),
      el("td", { class: "hide-narrow", text: r.last_error || "" })));
    const table = page.records.length ? el("div", { class: "scroll" }, el("table", { id: "records" },
      el("thead", {}, el("tr", {}, ["Record", "Flow", "State", "Basware invoice id", "Vendor", "BC document", "Last change", "Last error"]
        .map((t, i) => el("th", { scope: "col", class: i === 3 || i === 7 ? "hide-narrow" : null, text: t })))),
      el("tbody", {}, rows))) : el("p", { id: "no-records", text: "No records match these filters." });
    const keep = new URLSearchParams();
    for (const name of ["kind", "state", "time", "q"]) if (filters[name]) keep.set(name, filters[name]);
    const pager = el("div", { class: "pager" },
      filters.next ? el("a", { href: "#/records?" + keep.toString(), text: "First page" }) : "",
      page.next ? el("a", { id: "next-page", href: "#/records?" + new URLSearchParams([...keep, ["next", page.next]]).toString(), text: "Next page" }) : "",
      el("span", { class: "t-meta", text: `${page.count} on this page` + (page.next ? "; more on the next" : "") }));
    show(el("h1", {}, "Records"), form, el("section", { class: "panel" }, table, pager));
    say("");
  }

  // -- one record ----------------------------------------------------------------------------------------
  async function renderRecord(kind, id) {
    const record = await load(`${base}/api/records/${encodeURIComponent(kind)}/${encodeURIComponent(id)}`);
    const v = record.view;
    const link = (url, label) => url ? el("a", { href: url, target: "_blank", rel: "noopener noreferrer", text: label }) : null;
    const ids = el("dl", { class: "ids", id: "ids" },
      el("dt", {}, "State"), el("dd", {}, badge(v.bucket), " ", el("span", { class: "t-meta", text: record.state })),
      el("dt", {}, "Basware invoice id"), el("dd", {}, el("span", { class: "mono", text: v.basware_id || "–" }),
        v.basware_id ? el("div", { class: "t-meta", text: "Search it in Basware P2P: Basware publishes no link form for a document." }) : ""),
      el("dt", {}, "Invoice number"), el("dd", { text: v.invoice_number || "–" }),
      el("dt", {}, "Vendor"), el("dd", { text: v.vendor || "–" }),
      el("dt", {}, "BC document"), el("dd", {}, v.bc_number || "–", " ", link(v.bc_url, "open in Business Central")),
      el("dt", {}, "BC company"), el("dd", { class: "mono", text: v.bc_company || "–" }),
      el("dt", {}, "Attempts"), el("dd", { text: String(record.attempts) }),
      el("dt", {}, "Created / last change"), el("dd", { text: `${when(record.created)} / ${when(record.updated)}` }),
      el("dt", {}, "Job id"), el("dd", { class: "mono", text: record.id }));
    const problems = el("section", { class: "panel", "aria-labelledby": "why-title" },
      el("h2", { id: "why-title" }, "What went wrong"),
      v.clerk_message ? [el("p", { class: "t-meta", text: "Sent to the Basware clerk:" }), el("div", { class: "clerk", id: "clerk-message", text: v.clerk_message })] : "",
      v.last_error ? [el("p", { class: "t-meta", text: "Last error:" }), el("p", { id: "last-error", class: "mono", text: v.last_error })] : "",
      !v.clerk_message && !v.last_error ? el("p", { text: "Nothing: no error is recorded." }) : "");
    const replay = el("section", { class: "panel", "aria-labelledby": "replay-title", id: "replay-panel" },
      el("h2", { id: "replay-title" }, "Replay"),
      v.replayable ? el("p", {}, el("button", { type: "button", class: "danger", id: "replay", onclick: () => replayRecord(record) }, "Replay this record"),
                         " ", el("span", { class: "t-meta", text: "Puts the record's stored message back on its queue; the flow resumes where it stopped." }))
                   : el("p", { text: v.replay_pending ? `A replay requested at ${when(record.replay_requested_at)} is pending.`
                                                                 : "Only failed and dead-lettered records are replayed." }),
      el("p", { id: "replay-result", role: "status" }));
    const trail = el("ol", { class: "timeline", id: "trail" }, record.trail.map((row) => {
      const bad = /fail|refus|reject|invalid|dead|error|mismatch/.test(`${row.outcome}`);
      const good = /^(ok|done|queued|posted|sent)$/.test(`${row.outcome}`);
      return el("li", { class: bad ? "t-bad" : good ? "t-ok" : null },
        el("div", { class: "t-head" }, el("span", { class: "t-step", text: row.step }), el("span", { class: `badge ${bad ? "b-bad" : good ? "b-ok" : "b-other"}`, text: row.outcome }),
          row.http_status ? el("span", { class: "t-meta", text: `HTTP ${row.http_status}` }) : "",
          el("time", { class: "t-meta", datetime: row.time, text: when(row.time) }),
          row.correlation_id ? el("span", { class: "t-meta mono", text: `correlation ${row.correlation_id}` }) : ""),
        row.message ? el("div", { class: "t-msg", text: row.message }) : "");
    }));
    show(
      el("p", {}, el("a", { href: "#/records", text: "← Records" })),
      el("h1", {}, `${v.flow}: ${v.invoice_number || v.basware_id || record.id}`),
      el("div", { class: "grid" }, el("section", { class: "panel", "aria-labelledby": "ids-title" }, el("h2", { id: "ids-title" }, "Both sides"), ids),
        el("div", {}, problems, replay)),
      el("section", { class: "panel", "aria-labelledby": "trail-title" }, el("h2", { id: "trail-title" }, `Audit trail (${record.trail.length} steps, oldest first)`), trail));
    say("");
  }

  async function replayRecord(record) {
    const label = record.view.invoice_number || record.view.basware_id || record.id;
    if (!await confirmAction("Replay this record?", `${record.view.flow} ${label} is ${STATE_NAMES[record.state] || record.state}. Its stored message goes back on its queue and the connector works it again. Pressing it twice is safe: a pending replay is not enqueued again.`, "Replay")) return;
    const button = document.getElementById("replay");
    const out = document.getElementById("replay-result");
    button.disabled = true;
    const path = `${manage}/records/${encodeURIComponent(record.kind)}/${encodeURIComponent(record.id)}/replay`;
    const { status, body } = await call("POST", path);
    out.textContent = body.message || `HTTP ${status}`;
    if (status !== 202 && status !== 200) { button.disabled = false; return; }
    // The replay runs on the queue: show the record again once its state has moved on.
    const started = Date.now();
    while (Date.now() - started < 120000) {
      await new Promise((r) => setTimeout(r, 1000));
      const current = await load(`${base}/api/records/${encodeURIComponent(record.kind)}/${encodeURIComponent(record.id)}`);
      const finished = ["done", "failed", "dead_lettered"].includes(current.state);
      const deadAgain = current.state === "dead_lettered" && current.fields.dead_lettered_at !== record.fields.dead_lettered_at;
      // a worker has claimed it (attempts moved on), let go of it, and left it in a final state
      if (finished && current.attempts > record.attempts && !current.lease_until && (current.state !== "dead_lettered" || deadAgain)) {
        await renderRecord(record.kind, record.id);
        document.getElementById("replay-result").textContent = `Replayed: the record is now ${STATE_NAMES[current.state] || current.state}.`;
        return;
      }
      out.textContent = `${body.message}. Waiting for the connector… (now ${STATE_NAMES[current.state] || current.state})`;
    }
    out.textContent = "The replay is enqueued but has not finished yet; reload this page later.";
  }

  // -- routing ---------------------------------------------------------------------------------------------
  async function render() {
    const { parts, params } = route();
    document.getElementById("nav-overview").toggleAttribute("aria-current", false);
    document.getElementById("nav-records").toggleAttribute("aria-current", false);
    const nav = parts[0] === "records" || parts[0] === "record" ? "nav-records" : "nav-overview";
    document.getElementById(nav).setAttribute("aria-current", "page");
    if (!sessionStorage.getItem(KEY)) { askForKey(""); return; }
    keyPanel.hidden = true;
    forget.hidden = false;
    try {
      if (parts[0] === "records") await renderRecords(params);
      else if (parts[0] === "record" && parts.length >= 3) await renderRecord(parts[1], parts.slice(2).join("/"));
      else await renderOverview();
      document.title = `${document.querySelector("h1")?.textContent || "Console"} · ml-connector`;
    } catch (err) {
      if (err instanceof KeyRefused) {
        askForKey(err.message === "no key" ? "" : `The function key was not accepted (HTTP ${err.message}). Check the key and enter it again.`);
      } else {
        show(el("h1", {}, "Something went wrong"), el("p", { class: "error", role: "alert", id: "load-error", text: err.message }));
      }
    }
  }

  document.getElementById("tz").textContent = `Times in ${zone}`;
  window.addEventListener("hashchange", () => { render(); document.getElementById("main").focus({ preventScroll: true }); });
  render();
})();
