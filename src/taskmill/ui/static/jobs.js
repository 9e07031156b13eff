// Jobs: search, filter by status, task type, template and age; keyset pages, newest or
// oldest first; cancel or retry every job matching the filters.

import { get } from "./api.js";
import { bulkDialog, canWrite } from "./bulk.js";
import { between, clear, duration, empty, h, pill, relative, shortId } from "./dom.js";

export const STATUSES = ["scheduled", "queued", "running", "succeeded", "failed", "cancelled"];
const CANCELLABLE = ["scheduled", "queued", "running"];
const AGES = { "": "Any time", "1h": "Last hour", "24h": "Last 24 hours", "7d": "Last 7 days" };
const AGE_SECONDS = { "1h": 3600, "24h": 86400, "7d": 7 * 86400 };
const PAGE_SIZES = ["25", "50", "100"];

function took(job) {
  if (job.status === "running") return h("span", {}, "running ", relative(job.started_at));
  const seconds = between(job.started_at, job.finished_at);
  return seconds === null ? h("span", { class: "muted" }, "—") : duration(seconds);
}

function row(job, app) {
  const open = () => app.navigate(`#/jobs/${job.id}`);
  return h("tr", { class: "link", "data-job-id": job.id, onclick: open },
    h("td", {},
      h("a", { href: `#/jobs/${job.id}`, class: "mono", onclick: (e) => e.stopPropagation() }, shortId(job.id)),
      h("span", { class: "second" }, job.task_type, job.queue !== "default" ? ` · ${job.queue}` : ""),
      job.status === "failed" && job.last_error ? h("span", { class: "error-line", title: job.last_error }, job.last_error) : null),
    h("td", {}, pill(job.status)),
    h("td", { class: "num hide-narrow" }, `${job.attempt} / ${job.max_attempts}`),
    h("td", { class: "hide-narrow" }, relative(job.run_at)),
    h("td", { class: "hide-narrow" }, relative(job.created_at)),
    h("td", { class: "num", "data-col": "waited" },
      job.waited_seconds === null ? h("span", { class: "muted" }, "—") : duration(job.waited_seconds)),
    h("td", { class: "num hide-narrow" }, took(job)));
}

const COLUMNS = ["Job", "Status", "Attempt", "Due", "Created", "Waited", "Took"];
// What a phone leaves out: the rest fits its width (the job's page has them all).
const NARROW_HIDDEN = ["Attempt", "Due", "Created", "Took"];
const COLUMN_TITLES = { Waited: "From when it was due to when its latest attempt started" };

function table(items, app) {
  return h("div", { class: "table-scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, COLUMNS.map((name) =>
      h("th", { class: NARROW_HIDDEN.includes(name) ? "hide-narrow" : null, title: COLUMN_TITLES[name] }, name)))),
    h("tbody", {}, items.map((job) => row(job, app)))));
}

export function mount(container, { params }, app) {
  const filters = {
    status: params.getAll("status").filter((s) => STATUSES.includes(s)),
    task_type: params.get("task_type") || "",
    template_id: params.get("template_id") || "",
    age: params.get("age") in AGE_SECONDS ? params.get("age") : "",
    limit: PAGE_SIZES.includes(params.get("limit")) ? params.get("limit") : "50",
    order: params.get("order") === "asc" ? "asc" : "desc",
    q: (params.get("q") || "").slice(0, 200),
  };
  let cursors = [null];
  const results = h("div", { class: "panel flush" }, h("div", { class: "loading" }, "Loading…"));

  function changed() {
    const search = new URLSearchParams();
    filters.status.forEach((s) => search.append("status", s));
    for (const name of ["q", "task_type", "template_id", "age"]) if (filters[name]) search.set(name, filters[name]);
    if (filters.limit !== "50") search.set("limit", filters.limit);
    if (filters.order !== "desc") search.set("order", filters.order);
    // Keep the URL shareable without re-mounting the page (which would drop focus).
    const text = search.toString();
    history.replaceState(null, "", `#/jobs${text ? `?${text}` : ""}`);
    cursors = [null];
    paintActions();
    app.refresh();
  }

  // The filter as the API takes it (no cursor, no page size).
  function query() {
    const age = AGE_SECONDS[filters.age];
    return {
      q: filters.q,
      task_type: filters.task_type,
      template_id: filters.template_id,
      created_after: age ? new Date(Date.now() - age * 1000).toISOString() : "",
      order: filters.order,
    };
  }

  // Cancel applies to the chosen statuses that can be cancelled (all three if none is
  // chosen); retry to failed jobs, when failed is chosen or none is.
  const bulkStatuses = {
    cancel: () => (filters.status.length ? filters.status.filter((s) => CANCELLABLE.includes(s)) : CANCELLABLE),
    retry: () => (!filters.status.length || filters.status.includes("failed") ? ["failed"] : []),
  };

  async function matching(verb, limit) {
    const ids = [];
    let cursor = null;
    do {
      const page = await get("/jobs", { ...query(), status: bulkStatuses[verb](), limit: 500, cursor });
      ids.push(...page.items.map((job) => job.id));
      cursor = page.next_cursor;
    } while (cursor && ids.length < limit);
    return ids.slice(0, limit);
  }

  const bulkButtons = {
    cancel: h("button", { type: "button", id: "bulk-cancel", class: "danger", hidden: true,
      onclick: () => openBulk("cancel") }, "Cancel matching…"),
    retry: h("button", { type: "button", id: "bulk-retry", hidden: true,
      onclick: () => openBulk("retry") }, "Retry matching…"),
  };
  let writable = false;
  function paintActions() {
    for (const [verb, button] of Object.entries(bulkButtons)) button.hidden = !writable || !bulkStatuses[verb]().length;
  }
  canWrite().then((yes) => { writable = yes; paintActions(); });

  function openBulk(verb) {
    const opener = bulkButtons[verb];
    bulkDialog({
      verb,
      what: "matching these filters",
      collect: (limit) => matching(verb, limit),
      onDone: () => { app.refresh(); opener.focus(); },
    });
  }

  const statusButtons = STATUSES.map((status) => h("button", {
    type: "button", class: `tone-${status}`, "data-status": status,
    "aria-pressed": String(filters.status.includes(status)),
    onclick: (event) => {
      const on = !filters.status.includes(status);
      filters.status = on ? [...filters.status, status] : filters.status.filter((s) => s !== status);
      event.currentTarget.setAttribute("aria-pressed", String(on));
      changed();
    },
  }, status));
  const searchInput = h("input", { id: "job-search", type: "search", maxlength: 200, value: filters.q,
    placeholder: "job id, task type or payload text", "aria-label": "Search jobs",
    onkeydown: (e) => { if (e.key === "Enter") { e.preventDefault(); search(); } },
    onsearch: () => search() });
  function search() {
    const q = searchInput.value.trim();
    if (q === filters.q) return;
    filters.q = q;
    changed();
  }
  const orderButton = h("button", { type: "button", id: "order-toggle", class: "ghost",
    title: "Change the order of the list",
    onclick: () => {
      filters.order = filters.order === "desc" ? "asc" : "desc";
      orderButton.textContent = orderLabel();
      changed();
    } }, orderLabel());
  function orderLabel() { return filters.order === "desc" ? "Newest first ↓" : "Oldest first ↑"; }
  const taskInput = h("input", { id: "filter-task-type", type: "search", placeholder: "any task type", value: filters.task_type,
    onchange: (e) => { filters.task_type = e.target.value.trim(); changed(); } });
  const templateSelect = h("select", { id: "filter-template",
    onchange: (e) => { filters.template_id = e.target.value; changed(); } },
    h("option", { value: "" }, "Any template"),
    filters.template_id ? h("option", { value: filters.template_id, selected: true }, shortId(filters.template_id)) : null);
  get("/templates", { limit: 500 }).then((page) => {
    for (const t of page.items) {
      if (t.id === filters.template_id) templateSelect.lastChild.textContent = t.name;
      else templateSelect.append(h("option", { value: t.id }, t.name));
    }
  }).catch(() => { /* a key without templates:read filters by id only */ });
  const ageSelect = h("select", { id: "filter-age", onchange: (e) => { filters.age = e.target.value; changed(); } },
    Object.entries(AGES).map(([value, text]) => h("option", { value, selected: value === filters.age }, text)));
  const sizeSelect = h("select", { id: "page-size", onchange: (e) => { filters.limit = e.target.value; changed(); } },
    PAGE_SIZES.map((n) => h("option", { value: n, selected: n === filters.limit }, `${n} per page`)));

  container.append(
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"), h("span", { class: "spacer" }),
      bulkButtons.retry, bulkButtons.cancel, orderButton),
    h("div", { class: "panel" }, h("div", { class: "filters" },
      h("label", { class: "field grow" }, "Search", searchInput),
      h("div", { class: "field" }, h("span", {}, "Status"),
        h("div", { class: "status-filter", role: "group", "aria-label": "Status" }, statusButtons)),
      h("label", { class: "field" }, "Task type", taskInput),
      h("label", { class: "field" }, "Template", templateSelect),
      h("label", { class: "field" }, "Created", ageSelect))),
    results);

  function pager(page) {
    const index = cursors.length;
    return h("div", { class: "pager" },
      h("span", { class: "muted", id: "page-number" }, `Page ${index}`),
      sizeSelect,
      h("button", { type: "button", id: "prev-page", disabled: index === 1,
        onclick: () => { cursors.pop(); app.refresh(); } }, "← Previous"),
      h("button", { type: "button", id: "next-page", disabled: !page.next_cursor,
        onclick: () => { cursors.push(page.next_cursor); app.refresh(); } }, "Next →"));
  }

  return {
    async refresh() {
      const page = await get("/jobs", {
        ...query(),
        status: filters.status,
        limit: filters.limit,
        cursor: cursors[cursors.length - 1],
      });
      clear(results);
      if (!page.items.length) {
        const filtered = filters.status.length || filters.q || filters.task_type || filters.template_id || filters.age;
        results.append(filtered
          ? empty("No jobs match these filters", "Clear a filter, or wait for new jobs: this page refreshes by itself.")
          : empty("No jobs yet", "Schedule one with POST /jobs; it will appear here within seconds."));
        if (cursors.length > 1) results.append(pager(page));
        return;
      }
      results.append(table(page.items, app), pager(page));
    },
  };
}
