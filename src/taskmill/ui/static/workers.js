// Workers: who is running where, and how fresh each heartbeat is.

import { get } from "./api.js";
import { clear, empty, h, pill, relative } from "./dom.js";

const ORDER = { alive: 0, dead: 1, stopped: 2 };
const FRESH_SECONDS = 30; // the default lease: a live worker beats well within it

function heartbeat(worker) {
  const age = (Date.now() - new Date(worker.heartbeat_at).getTime()) / 1000;
  let tone = "neutral";
  if (worker.status === "alive") tone = age < FRESH_SECONDS ? "succeeded" : age < 2 * FRESH_SECONDS ? "retried" : "failed";
  return h("span", { class: `pill tone-${tone}`, title: "last heartbeat" }, relative(worker.heartbeat_at));
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
      results.append(h("table", {},
        h("thead", {}, h("tr", {}, ["Worker", "Status", "Heartbeat", "Queues", "Slots", "Started"].map((n) => h("th", {}, n)))),
        h("tbody", {}, list.map((w) => h("tr", { "data-worker-id": w.id },
          h("td", {}, h("code", {}, w.id), h("span", { class: "second" }, `${w.hostname} · pid ${w.pid}`)),
          h("td", {}, pill(w.status)),
          h("td", {}, heartbeat(w)),
          h("td", {}, h("div", { class: "chips" }, w.queues.map((q) => h("span", { class: "chip" }, q)))),
          h("td", { class: "num" }, w.concurrency),
          h("td", {}, w.stopped_at ? h("span", {}, relative(w.started_at), h("span", { class: "second" }, "stopped ", relative(w.stopped_at))) : relative(w.started_at)))))));
    },
  };
}
