// Queues: per queue of the merchant, what waits (queued, scheduled, the oldest due job's
// age), what runs, and what finished in the last 5 and 60 minutes (GET /queues).

import { get } from "./api.js";
import { clear, empty, h, notice, pill, span } from "./dom.js";

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

// The queue's state. Queues cannot be paused yet: every queue is "active". Pausing
// (POST /queues/{name}/pause|resume) goes here: the state from q.state, and its button.
function stateCell(q) {
  return h("td", { class: "queue-state", "data-label": "State" }, pill(q.state === "active" ? "alive" : q.state, q.state));
}

function oldestDue(q) {
  const label = "Oldest due";
  if (q.oldest_due_age_seconds === null) return h("td", { class: "muted", "data-label": label }, "—");
  const slow = q.oldest_due_age_seconds > SLOW_SECONDS;
  return h("td", { class: slow ? "num warn-text" : "num", "data-label": label }, span(q.oldest_due_age_seconds));
}

/** One queue's row: every column of the page, so a new one (pausing) changes only here. */
export function queueRow(q) {
  return h("tr", { "data-queue": q.queue },
    h("td", { class: "queue-name" }, h("code", {}, q.queue)),
    stateCell(q),
    h("td", { class: "num", "data-count": "queued", "data-label": COLUMNS[2] }, q.queued),
    h("td", { class: "num", "data-count": "scheduled", "data-label": COLUMNS[3] }, q.scheduled),
    oldestDue(q),
    h("td", { class: "num", "data-count": "running", "data-label": COLUMNS[5] }, q.running),
    rate(COLUMNS[6], q.succeeded_5m, 5),
    rate(COLUMNS[7], q.failed_5m, 5),
    rate(COLUMNS[8], q.succeeded_60m, 60),
    rate(COLUMNS[9], q.failed_60m, 60));
}

export function mount(container) {
  const summary = h("span", { class: "muted" });
  const results = h("div", { class: "panel flush" }, h("div", { class: "loading" }, "Loading…"));
  const warning = h("div");
  container.append(h("div", { class: "page-head" }, h("h1", {}, "Queues"), h("span", { class: "spacer" }), summary), warning, results);
  return {
    async refresh() {
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
        h("tbody", {}, found.items.map(queueRow)))));
    },
  };
}
