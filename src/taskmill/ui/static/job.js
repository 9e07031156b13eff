// One job: its facts, actions (cancel, retry, run now), every attempt and its event timeline.

import { ApiError, get, post } from "./api.js";
import { absolute, between, clear, duration, empty, h, json, notice, pill, relative } from "./dom.js";

const CANCELLABLE = ["scheduled", "queued", "running"];

const EVENTS = {
  "job.created": ["Created", "scheduled"],
  "job.queued": ["Queued", "queued"],
  "job.started": ["Started", "running"],
  "job.succeeded": ["Succeeded", "succeeded"],
  "job.failed": ["Failed", "failed"],
  "job.retry_scheduled": ["Retry scheduled", "retried"],
  "job.lease_expired": ["Lease expired", "retried"],
  "job.released": ["Released at shutdown", "neutral"],
  "job.cancelled": ["Cancelled", "cancelled"],
  "job.retried": ["Retried by hand", "scheduled"],
};

function eventDetail(event) {
  const changes = event.data?.changes || {};
  switch (event.type) {
    case "job.created": return `due ${absolute(changes.run_at)}`;
    case "job.queued": return event.actor.startsWith("api_key:") ? "run now, before its due time" : "";
    case "job.started": return `attempt ${changes.attempt} on ${changes.worker_id}`;
    case "job.failed": return changes.last_error || event.data?.reason || "";
    case "job.retry_scheduled": return `${changes.last_error || "failed"} — runs again ${absolute(changes.run_at)}`;
    case "job.lease_expired": return "the worker stopped renewing its lease; the job was rescued";
    case "job.cancelled": return event.data?.reason || "";
    default: return "";
  }
}

function timeline(events) {
  if (!events.length) return empty("No events", "");
  return h("ol", { class: "timeline", id: "timeline" }, events.map((event) => {
    const [label, tone] = EVENTS[event.type] || [event.type, "neutral"];
    const detail = eventDetail(event);
    return h("li", { class: `tone-${tone}`, "data-event": event.type },
      h("span", { class: "node", "aria-hidden": "true" }),
      h("div", {}, h("span", { class: "what" }, label), h("span", { class: "when" }, relative(event.occurred_at), " · ", event.actor)),
      detail ? h("div", { class: "detail" }, detail) : null);
  }));
}

function runsTable(runs) {
  if (!runs.length) return empty("No attempts yet", "An attempt appears here when an executor starts the job.");
  return h("table", { id: "runs" },
    h("thead", {}, h("tr", {}, ["#", "Outcome", "Worker", "Started", "Took", "Error"].map((n) => h("th", {}, n)))),
    h("tbody", {}, runs.map((run) => h("tr", {},
      h("td", { class: "num" }, run.attempt),
      h("td", {}, run.outcome ? pill(run.outcome) : pill("running")),
      h("td", { class: "mono" }, run.worker_id),
      h("td", {}, relative(run.started_at)),
      h("td", { class: "num" }, duration(run.duration_seconds ?? between(run.started_at, run.finished_at))),
      h("td", {}, run.error ? h("span", { class: "error-line", title: run.error }, run.error) : "")))));
}

function fact(label, value) {
  return h("div", {}, h("dt", {}, label), h("dd", {}, value ?? h("span", { class: "muted" }, "—")));
}

// What the handler of the current attempt last reported (ctx.progress), if anything.
function progress(job) {
  const p = job.progress;
  if (!p) return null;
  const pct = Math.round(p.fraction * 100);
  return h("span", { id: "job-progress", class: "job-progress" },
    h("progress", { value: String(p.fraction), max: "1", "aria-label": `${pct}% done` }),
    h("span", {}, `${pct}%${p.message ? ` · ${p.message}` : ""}`),
    h("span", { class: "second" }, `reported ${relative(p.reported_at)}`));
}

// How long a started job waited after it was due (its latest start; a retry moves run_at).
function waited(job) {
  const seconds = between(job.run_at, job.started_at);
  return seconds === null ? null : h("span", { id: "job-waited" }, duration(seconds));
}

function facts(job) {
  return h("dl", { class: "facts" },
    fact("Task type", h("code", {}, job.task_type)),
    fact("Queue · priority", `${job.queue} · ${job.priority}`),
    fact("Attempt", `${job.attempt} of ${job.max_attempts}`),
    fact("Schedule", job.schedule_type.replace("_", " ")),
    fact("Due", relative(job.run_at)),
    fact("Created", relative(job.created_at)),
    fact("Started", job.started_at ? relative(job.started_at) : null),
    fact("Waited to start", waited(job)),
    fact("Progress", progress(job)),
    fact("Finished", job.finished_at ? relative(job.finished_at) : null),
    fact("Worker", job.worker_id ? h("code", {}, job.worker_id) : null),
    fact("Timeout", job.timeout_seconds ? duration(job.timeout_seconds) : "none"),
    fact("Template", job.template_id ? h("a", { href: `#/jobs?template_id=${job.template_id}` }, "its jobs") : null),
    fact("Idempotency key", job.idempotency_key ? h("code", {}, job.idempotency_key) : null));
}

function actions(job, app, reload, ui) {
  const box = h("div", { class: "confirm", id: "job-actions" });
  async function act(path, body, done) {
    ui.confirming = false;
    try {
      await post(path, body);
      app.toast(done);
    } catch (error) {
      app.toast(error instanceof ApiError ? error.explanation : String(error), "error");
    }
    await reload();
  }
  function confirm(kind, question, yes) {
    ui.confirming = kind;
    clear(box).append(
      h("span", { class: "muted" }, question),
      yes,
      h("button", { type: "button", class: "ghost", onclick: () => { ui.confirming = false; reload(); } }, "Keep it"));
    yes.focus();
  }
  function confirmCancel() {
    confirm("cancel", "Cancel this job?", h("button", { type: "button", class: "danger solid", id: "confirm-cancel",
      onclick: () => act(`/jobs/${job.id}/cancel`, { reason: "cancelled from the monitoring UI" }, "Job cancelled") }, "Yes, cancel"));
  }
  function confirmRunNow() {
    confirm("run-now", "Run this job now instead of at its due time?", h("button", { type: "button", class: "primary", id: "confirm-run-now",
      onclick: () => act(`/jobs/${job.id}/run-now`, undefined, "Job queued to run now") }, "Yes, run now"));
  }
  if (job.status === "scheduled") {
    box.append(h("button", { type: "button", id: "run-now", onclick: confirmRunNow }, "Run now"));
  }
  if (CANCELLABLE.includes(job.status)) {
    box.append(h("button", { type: "button", class: "danger", id: "cancel-job", onclick: confirmCancel }, "Cancel job"));
  }
  if (job.status === "failed") {
    box.append(h("button", { type: "button", id: "retry-job",
      onclick: () => act(`/jobs/${job.id}/retry`, undefined, "Job scheduled for one more attempt") }, "Retry"));
  }
  return box;
}

export function mount(container, { id }, app) {
  const head = h("div", { class: "page-head" });
  const body = h("div", {}, h("div", { class: "loading" }, "Loading…"));
  const ui = { confirming: false };
  container.append(h("a", { class: "back", href: "#/jobs" }, "← Jobs"), head, body);

  async function load() {
    let job;
    try {
      job = await get(`/jobs/${encodeURIComponent(id)}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 404) {
        clear(head).append(h("h1", {}, "Job not found"));
        clear(body).append(empty("No such job", "It may belong to another merchant, or the id is mistyped."));
        return;
      }
      throw error;
    }
    const [runs, events] = await Promise.all([
      get(`/jobs/${job.id}/runs`),
      get("/events", { job_id: job.id, limit: 1000 }),
    ]);
    // A pending "Cancel this job?" or "Run now?" question must survive the auto-refresh
    // (while the job can still take that action).
    const still = { cancel: CANCELLABLE.includes(job.status), "run-now": job.status === "scheduled" };
    ui.confirming = ui.confirming && still[ui.confirming] ? ui.confirming : false;
    if (!ui.confirming) {
      clear(head).append(h("h1", {}, job.task_type), pill(job.status),
        h("code", { class: "muted", id: "job-id" }, job.id), h("span", { class: "spacer" }), actions(job, app, load, ui));
    }
    const problem = job.last_error && job.status !== "succeeded"
      ? h("section", { class: "panel" }, h("h2", {}, "Last error"), h("pre", { class: "json error" }, job.last_error)) : null;
    const cancelled = job.cancel_reason
      ? h("section", { class: "panel" }, h("h2", {}, "Cancelled"), h("p", {}, job.cancel_reason)) : null;
    const stuck = job.waiting_reason ? notice("warn", `Waiting: ${job.waiting_reason}.`) : null;
    const sections = [
      stuck,
      h("section", { class: "panel" }, facts(job)),
      problem, cancelled,
      h("div", { class: "grid two" },
        h("section", { class: "panel" }, h("h2", {}, `Timeline · ${events.items.length} events`), timeline(events.items)),
        h("div", {},
          h("section", { class: "panel" }, h("h2", {}, "Payload"), json(job.payload)),
          h("section", { class: "panel" }, h("h2", {}, "Result"), json(job.result)))),
      h("section", { class: "panel flush" }, h("h2", { class: "inset" }, `Attempts · ${runs.length}`), runsTable(runs)),
    ];
    clear(body).append(...sections.filter(Boolean));
  }

  return { refresh: load };
}
