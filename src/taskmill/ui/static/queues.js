// Queues: per queue of the merchant, what waits (queued, scheduled, the oldest due job's
// age), what runs, and what finished in the last 5 and 60 minutes (GET /queues).

import { ApiError, get, post, request, storedKey } from "./api.js";
import { absolute, clear, empty, h, notice, pill, relative, span } from "./dom.js";

const COLUMNS = ["Queue", "State", "Queued", "Scheduled", "Oldest due", "Running",
  "Succeeded · 5 min", "Failed · 5 min", "Succeeded · 1 h", "Failed · 1 h"];
const SLOW_SECONDS = 60; // a due job older than this is worth a look

function rate(label, count, minutes) {
  const perMinute = count / minutes;
  let text = String(Math.round(perMinute));
  if (perMinute > 0 && perMinute < 0.1) text = "<0.1";
  else if (perMinute > 0 && perMinute < 10) text = perMinute.toFixed(1);
  return h("td", { class: "num", "data-label": label },
    h("span", {}, String(count), h("span", { class: "second" }, `${text}/min`)));
}

// Whether the key may pause queues (admin). No endpoint lists a key's scopes: resuming a
// queue that is not paused changes nothing and records nothing, and answers 200 to an
// admin key and 403 to any other. Asked once per key and tab.
const adminKeys = new Map();
function isAdmin() {
  const key = storedKey();
  if (!adminKeys.has(key)) {
    adminKeys.set(key, request("POST", "/queues/scope-probe/resume")
      .then(() => true)
      .catch((error) => {
        if (!(error instanceof ApiError && error.status === 403)) adminKeys.delete(key);
        return false;
      }));
  }
  return adminKeys.get(key);
}

// The queue's state (active, or paused with when and by whom) and, for an admin key, the
// button that pauses or resumes it, after a confirmation in place.
function stateCell(q, ui) {
  const cell = h("td", { class: "queue-state", "data-label": "State" });
  const paused = q.state === "paused";
  function show() {
    clear(cell);
    cell.append(pill(paused ? "retried" : "alive", q.state));
    if (paused && q.paused_at) {
      cell.append(h("span", { class: "second", title: absolute(q.paused_at) }, `since ${relative(q.paused_at)} by ${q.paused_by}`));
    }
    if (ui.admin) {
      cell.append(h("button", { type: "button", class: "ghost small", "data-action": paused ? "resume" : "pause", onclick: ask }, paused ? "Resume" : "Pause"));
    }
  }
  function ask() {
    ui.confirming = true;
    clear(cell);
    const verb = paused ? "resume" : "pause";
    const question = paused ? `Resume ${q.queue}? Executors take its jobs again.` : `Pause ${q.queue} for every executor? Its jobs wait; running ones finish.`;
    cell.append(h("span", { class: "confirm-question" }, question),
      h("button", { type: "button", class: paused ? "primary small" : "danger solid small", "data-confirm": verb, onclick: () => act(verb) }, paused ? "Resume" : "Pause"),
      h("button", { type: "button", class: "ghost small", onclick: () => { ui.confirming = false; show(); } }, "Keep it"));
    cell.querySelector("[data-confirm]").focus();
  }
  async function act(verb) {
    try {
      await post(`/queues/${encodeURIComponent(q.queue)}/${verb}`);
      ui.app.toast(verb === "pause" ? `Queue ${q.queue} paused` : `Queue ${q.queue} resumed`);
    } catch (error) {
      ui.app.toast(error instanceof ApiError ? error.explanation : String(error), "error");
    } finally {
      ui.confirming = false;
      ui.app.refresh();
    }
  }
  show();
  return cell;
}

function oldestDue(q) {
  const label = "Oldest due";
  if (q.oldest_due_age_seconds === null) return h("td", { class: "muted", "data-label": label }, "—");
  const slow = q.oldest_due_age_seconds > SLOW_SECONDS;
  return h("td", { class: slow ? "num warn-text" : "num", "data-label": label }, span(q.oldest_due_age_seconds));
}

/** One queue's row: every column of the page, so a new one (pausing) changes only here. */
export function queueRow(q, ui = { admin: false }) {
  return h("tr", { "data-queue": q.queue, "data-state": q.state },
    h("td", { class: "queue-name" }, h("code", {}, q.queue)),
    stateCell(q, ui),
    h("td", { class: "num", "data-count": "queued", "data-label": COLUMNS[2] }, q.queued),
    h("td", { class: "num", "data-count": "scheduled", "data-label": COLUMNS[3] }, q.scheduled),
    oldestDue(q),
    h("td", { class: "num", "data-count": "running", "data-label": COLUMNS[5] }, q.running),
    rate(COLUMNS[6], q.succeeded_5m, 5),
    rate(COLUMNS[7], q.failed_5m, 5),
    rate(COLUMNS[8], q.succeeded_60m, 60),
    rate(COLUMNS[9], q.failed_60m, 60));
}

export function mount(container, _params, app) {
  const ui = { admin: false, confirming: false, app };
  isAdmin().then((yes) => { if (yes) { ui.admin = true; app.refresh(); } });
  const summary = h("span", { class: "muted" });
  const results = h("div", { class: "panel flush" }, h("div", { class: "loading" }, "Loading…"));
  const warning = h("div");
  container.append(h("div", { class: "page-head" }, h("h1", {}, "Queues"), h("span", { class: "spacer" }), summary), warning, results);
  return {
    async refresh() {
      if (ui.confirming) return; // the question stays put until answered
      const found = await get("/queues");
      const queued = found.items.reduce((n, q) => n + q.queued, 0);
      summary.textContent = `${found.items.length} queue${found.items.length === 1 ? "" : "s"} · ${queued} queued`;
      clear(warning);
      if (found.truncated) warning.append(notice("warn", "Partial: more than 200 queues, or more finished in the last hour than one refresh reads."));
      clear(results);
      if (!found.items.length) {
        results.append(empty("No queues yet", "A queue appears here once one of your jobs uses it."));
        return;
      }
      results.append(h("div", { class: "table-scroll" }, h("table", { id: "queues", class: "stack-narrow" },
        h("thead", {}, h("tr", {}, COLUMNS.map((n) => h("th", {}, n)))),
        h("tbody", {}, found.items.map((q) => queueRow(q, ui))))));
    },
  };
}
