// Overview: what is waiting and running now, what finished in the last hour, and lag.

import { get } from "./api.js";
import { legend, percentLine, stackedBars } from "./charts.js";
import { clear, duration, h, notice, percent, span } from "./dom.js";

const SERIES = ["succeeded", "retried", "failed"];

function card({ label, value, sub, tone, href, id }) {
  const attrs = { class: `card tone-${tone || "neutral"}`, "data-card": id };
  const body = [h("div", { class: "label" }, label), h("div", { class: "value" }, value),
    sub ? h("div", { class: "sub" }, sub) : null];
  return href ? h("a", { ...attrs, href }, body) : h("div", attrs, body);
}

function buckets(stats) {
  return stats.per_minute.map((m) => ({ at: new Date(m.minute), values: m }));
}

function failureRatio(bucket) {
  const v = bucket.values;
  const finished = v.succeeded + v.failed + v.retried;
  return finished ? (v.failed + v.retried) / finished : null;
}

function cards(stats, alive) {
  const now = stats.unfinished;
  const hour = stats.window_totals;
  const attempts = hour.succeeded + hour.failed + hour.retried;
  const failedAttempts = hour.failed + hour.retried;
  const lag = stats.start_lag;
  const waiting = stats.due && stats.oldest_due_age_seconds > 60;
  return [
    h("h2", {}, "Now"),
    h("div", { class: "cards", id: "cards-now" },
      card({ id: "scheduled", label: "Scheduled", value: now.scheduled, sub: "waiting for their time", tone: "scheduled", href: "#/jobs?status=scheduled" }),
      card({ id: "queued", label: "Queued", value: now.queued, sub: "ready for an executor", tone: "queued", href: "#/jobs?status=queued" }),
      card({ id: "running", label: "Running", value: now.running, sub: "on an executor", tone: "running", href: "#/jobs?status=running" }),
      card({ id: "backlog", label: "Oldest due job", value: stats.due ? span(stats.oldest_due_age_seconds) : "—", sub: stats.due ? `${stats.due} due, not started` : "nothing waiting", tone: waiting ? "retried" : "neutral" }),
      card({ id: "workers", label: "Workers alive", value: alive === null ? "—" : alive, sub: "heartbeating", tone: alive ? "succeeded" : "failed", href: "#/workers" })),
    h("h2", {}, "Last hour"),
    h("div", { class: "cards", id: "cards-hour" },
      card({ id: "succeeded", label: "Succeeded", value: hour.succeeded, sub: "jobs", tone: "succeeded", href: "#/jobs?status=succeeded&age=1h" }),
      card({ id: "failed", label: "Failed", value: hour.failed, sub: `jobs · ${hour.retried} attempts retried`, tone: "failed", href: "#/jobs?status=failed&age=1h" }),
      card({ id: "cancelled", label: "Cancelled", value: hour.cancelled, sub: "jobs", tone: "cancelled", href: "#/jobs?status=cancelled&age=1h" }),
      card({ id: "failure-rate", label: "Failed attempts", value: percent(failedAttempts, attempts), sub: `of ${attempts} finished attempts`, tone: failedAttempts ? "retried" : "neutral" }),
      card({ id: "lag", label: "Start lag p95", value: lag.samples ? duration(lag.p95_seconds) : "—", sub: lag.samples ? `p50 ${duration(lag.p50_seconds)} · max ${duration(lag.max_seconds)}` : "no job started yet", tone: "neutral" })),
  ];
}

function charts(stats) {
  const series = buckets(stats);
  return h("div", { class: "grid two" },
    h("section", { class: "panel", "aria-labelledby": "throughput-title" },
      h("h2", { id: "throughput-title" }, "Throughput per minute"),
      legend(SERIES),
      stackedBars(series, SERIES, { label: "Finished attempts per minute, last hour", emptyText: "No job finished in the last hour" })),
    h("section", { class: "panel", "aria-labelledby": "failure-title" },
      h("h2", { id: "failure-title" }, "Failed attempts per minute"),
      h("div", { class: "legend" }, h("span", { class: "tone-failed" }, "failed or retried, % of finished attempts")),
      percentLine(series, failureRatio, {
        label: "Share of attempts that failed, per minute",
        emptyText: "Nothing finished, nothing failed",
        title: (b) => `${percent(b.values.failed + b.values.retried, b.values.succeeded + b.values.failed + b.values.retried)} of ${b.values.succeeded + b.values.failed + b.values.retried}`,
      })),
  );
}

export function mount(container) {
  const body = h("div", {}, h("div", { class: "loading" }, "Loading…"));
  container.append(h("div", { class: "page-head" }, h("h1", {}, "Overview"), h("span", { class: "spacer" }),
    h("span", { class: "muted" }, "Now, and the last hour")), body);
  return {
    async refresh() {
      const [stats, workers, ready] = await Promise.all([
        get("/stats"), get("/workers").catch(() => null), get("/readyz").catch(() => null)]);
      const alive = workers ? workers.filter((w) => w.status === "alive").length : null;
      clear(body);
      if (stats.truncated) body.append(notice("warn", "More happened in the last hour than one refresh reads; the hourly numbers are partial."));
      for (const [taskType, count] of Object.entries(stats.unserved_task_types || {})) {
        body.append(notice("warn", `${count} queued job${count === 1 ? "" : "s"} of task type “${taskType}” wait: no live worker runs it. Start a worker whose app registers it, or cancel them.`));
      }
      for (const warning of ready?.warnings || []) {  // table health (PostgreSQL)
        body.append(notice("warn", `Database: ${warning}. Vacuum it, or see “Table health” in docs/howto/operating.md.`));
      }
      body.append(...cards(stats, alive), charts(stats));
    },
  };
}
