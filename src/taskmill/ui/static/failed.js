// Failed jobs grouped by their error (numbers and ids masked), with a bulk retry per group.

import { get, query } from "./api.js";
import { bulkDialog, canWrite } from "./bulk.js";
import { clear, empty, h, relative } from "./dom.js";

const SINCE = { "1h": "Last hour", "24h": "Last 24 hours", "7d": "Last 7 days", any: "Any time" };
const SINCE_SECONDS = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };

function jobsLink(group) {
  const params = { status: "failed" };
  if (group.task_types.length === 1) params.task_type = group.task_types[0];
  return `#/jobs${query(params)}`;
}

export function mount(container, { params }, app) {
  let since = params.get("since") in SINCE ? params.get("since") : "7d";
  let writable = false;
  const results = h("div", { class: "panel flush" }, h("div", { class: "loading" }, "Loading…"));
  const sinceSelect = h("select", { id: "failed-since", "aria-label": "Failed since",
    onchange: (e) => {
      since = e.target.value;
      history.replaceState(null, "", `#/failed${since === "7d" ? "" : query({ since })}`);
      app.refresh();
    } },
    Object.entries(SINCE).map(([value, text]) => h("option", { value, selected: value === since }, text)));
  const note = h("p", { class: "muted", id: "failed-note" });

  container.append(
    h("div", { class: "page-head" }, h("h1", {}, "Failed jobs"), h("span", { class: "spacer" }), sinceSelect),
    note,
    results);

  canWrite().then((yes) => { writable = yes; app.refresh(); });

  function retryGroup(group, button) {
    bulkDialog({
      verb: "retry",
      what: `in the group “${group.key}”`,
      // The API lists a group's newest 1,000 ids (BULK_LIMIT); one more entry makes
      // the dialog say there are more than it will retry.
      collect: async () => (group.count > group.job_ids.length ? [...group.job_ids, "more"] : group.job_ids),
      onDone: () => { app.refresh(); button.focus(); },
    });
  }

  function groupRow(group) {
    const retry = writable
      ? h("button", { type: "button", class: "retry-group", onclick: (e) => retryGroup(group, e.currentTarget) }, "Retry group")
      : null;
    return h("tr", { "data-group": group.key },
      h("td", {},
        h("span", { class: "error-key", title: group.example }, group.key),
        h("span", { class: "second" }, group.example)),
      h("td", { class: "num" }, group.count.toLocaleString()),
      h("td", {}, h("div", { class: "chips" }, group.task_types.map((t) => h("span", { class: "chip" }, t)))),
      h("td", {}, relative(group.newest_at)),
      h("td", {}, h("div", { class: "row-actions" }, h("a", { href: jobsLink(group) }, "View jobs"), retry)));
  }

  return {
    async refresh() {
      const seconds = SINCE_SECONDS[since];
      const found = await get("/jobs/failures", {
        since: seconds ? new Date(Date.now() - seconds * 1000).toISOString() : "",
        limit: 50,
      });
      note.textContent = found.bounded
        ? `Grouped from the newest ${found.scanned.toLocaleString()} failed jobs; older ones are not counted.`
        : `${found.scanned.toLocaleString()} failed job${found.scanned === 1 ? "" : "s"}, grouped by error (numbers and ids masked).`;
      clear(results);
      if (!found.groups.length) {
        results.append(empty("No failed jobs", seconds ? "Nothing failed in this period." : "Nothing has failed."));
        return;
      }
      results.append(h("div", { class: "table-scroll" }, h("table", { id: "failure-groups" },
        h("thead", {}, h("tr", {}, ["Error", "Jobs", "Task types", "Newest", ""].map((name) => h("th", {}, name)))),
        h("tbody", {}, found.groups.map(groupRow)))));
    },
  };
}
