// Workers: who is running where, how fresh each heartbeat is, and the jobs each runs now
// (this key's merchant's only; every merchant's for an admin key).

import { get } from "./api.js";
import { clear, duration, empty, h, pill, relative, shortId } from "./dom.js";

const ORDER = { alive: 0, dead: 1, stopped: 2 };
const FRESH_SECONDS = 30; // the default lease: a live worker beats well within it

function heartbeat(worker) {
  const age = (Date.now() - new Date(worker.heartbeat_at).getTime()) / 1000;
  let tone = "neutral";
  if (worker.status === "alive") tone = age < FRESH_SECONDS ? "succeeded" : age < 2 * FRESH_SECONDS ? "retried" : "failed";
  return h("span", { class: `pill tone-${tone}`, title: "last heartbeat" }, relative(worker.heartbeat_at));
}

function runningNow(worker) {
  const jobs = worker.running || [];
  if (!jobs.length) return h("span", { class: "muted" }, "nothing");
  const more = worker.running_total - jobs.length;
  return h("ul", { class: "running-now", "aria-label": `Jobs ${worker.id} runs now` },
    jobs.map((job) => h("li", { "data-job-id": job.job_id },
      h("code", {}, job.task_type), " ",
      h("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}`, title: job.job_id }, shortId(job.job_id)),
      h("span", { class: "muted" }, ` · for ${duration(job.running_seconds)}`))),
    more > 0 ? h("li", { class: "muted" }, `and ${more} more`) : null);
}

export function mount(container) {
  const summary = h("span", { class: "muted" });
  const results = h("div", { class: "panel flush" }, h("div", { class: "loading" }, "Loading…"));
  container.append(h("div", { class: "page-head" }, h("h1", {}, "Workers"), h("span", { class: "spacer" }), summary), results);
  return {
    async refresh() {
      const list = await get("/workers");
      list.sort((a, b) => (ORDER[a.status] ?? 3) - (ORDER[b.status] ?? 3) || b.heartbeat_at.localeCompare(a.heartbeat_at));
      const alive = list.filter((w) => w.status === "alive").length;
      summary.textContent = `${alive} alive · ${list.length - alive} stopped or dead`;
      clear(results);
      if (!list.length) {
        results.append(empty("No workers have registered yet", "Start one with `taskmill run` or `taskmill executor`."));
        return;
      }
      results.append(h("div", { class: "table-scroll" }, h("table", { class: "stack-narrow" },
        h("thead", {}, h("tr", {}, ["Worker", "Status", "Heartbeat", "Running now", "Queues", "Slots", "Started"].map((n) => h("th", {}, n)))),
        h("tbody", {}, list.map((w) => h("tr", { "data-worker-id": w.id },
          h("td", {}, h("code", {}, w.id), h("span", { class: "second" }, `${w.hostname} · pid ${w.pid}`)),
          h("td", { "data-label": "Status" }, pill(w.status)),
          h("td", { "data-label": "Heartbeat" }, heartbeat(w)),
          h("td", { class: "running-cell", "data-label": "Running now" }, runningNow(w)),
          h("td", { "data-label": "Queues" }, h("div", { class: "chips" }, w.queues.map((q) => h("span", { class: "chip" }, q)))),
          h("td", { class: "num", "data-label": "Slots" }, w.concurrency),
          h("td", { "data-label": "Started" }, w.stopped_at ? h("span", {}, relative(w.started_at), h("span", { class: "second" }, "stopped ", relative(w.stopped_at))) : relative(w.started_at))))))));
    },
  };
}
