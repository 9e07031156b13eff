// Templates: schedule, next fire times (DST-affected ones flagged), and the on/off switch.

import { ApiError, get, patch } from "./api.js";
import { absolute, clear, duration, empty, h, relative } from "./dom.js";

const PREVIEW_COUNT = 3;
const PREVIEW_LIMIT = 50; // templates per page whose next fires are looked up

function schedule(t) {
  const what = t.cron_expression ? h("code", {}, t.cron_expression) : `every ${duration(t.interval_seconds)}`;
  return h("span", {}, what, h("span", { class: "second" }, t.timezone));
}

function fires(template, preview) {
  if (!template.active) return h("span", { class: "muted" }, "paused");
  if (!preview) return relative(template.next_run_at);
  if (!preview.length) return h("span", { class: "muted" }, "no more runs");
  return h("ol", { class: "chips", "aria-label": "Next fire times" }, preview.map((fire) =>
    h("li", { class: "chip", title: `${fire.local} in the template's time zone` },
      relative(fire.at), fire.dst_affected ? " · DST" : "")));
}

function toggle(template, app, onChanged) {
  const button = h("button", {
    type: "button", class: "switch", role: "switch", "aria-checked": String(template.active),
    "aria-label": `${template.name} active`, "data-template": template.name,
    onclick: async () => {
      button.disabled = true;
      try {
        await patch(`/templates/${template.id}`, { active: !template.active });
        app.toast(`${template.name} ${template.active ? "switched off" : "switched on"}`);
      } catch (error) {
        app.toast(error instanceof ApiError ? error.explanation : String(error), "error");
      }
      await onChanged();
    },
  }, h("span", { class: "track" }, h("span", { class: "thumb" })), template.active ? "On" : "Off");
  return button;
}

export function mount(container, _route, app) {
  const results = h("div", { class: "panel flush" }, h("div", { class: "loading" }, "Loading…"));
  const previews = new Map(); // by id + next_run_at: the fires change only when that does
  container.append(h("div", { class: "page-head" }, h("h1", {}, "Templates"), h("span", { class: "spacer" }),
    h("span", { class: "muted" }, "Recurring jobs: interval or cron")), results);

  async function preview(t) {
    const key = `${t.id}|${t.next_run_at}|${t.active}`;
    if (!previews.has(key)) {
      previews.set(key, t.active ? get(`/templates/${t.id}/preview`, { count: PREVIEW_COUNT }).catch(() => null) : null);
    }
    return previews.get(key);
  }

  async function refresh() {
    // One page (the API pages templates): the first 500, oldest first.
    const list = (await get("/templates", { limit: 500 })).items;
    const fireTimes = await Promise.all(list.map((t, i) => (i < PREVIEW_LIMIT ? preview(t) : null)));
    clear(results);
    if (!list.length) {
      results.append(empty("No templates yet", "POST /templates with a cron expression or interval_seconds to create one."));
      return;
    }
    results.append(h("table", {},
      h("thead", {}, h("tr", {}, ["Template", "Schedule", "Next fires", "Last fired", "Active"].map((n) => h("th", {}, n)))),
      h("tbody", {}, list.map((t, i) => h("tr", { "data-template-id": t.id },
        h("td", {}, h("strong", {}, t.name), h("span", { class: "second" }, t.task_type, " · ",
          h("a", { href: `#/jobs?template_id=${t.id}` }, "jobs"))),
        h("td", {}, schedule(t)),
        h("td", { class: "fires" }, fires(t, fireTimes[i])),
        h("td", {}, t.last_scheduled_for ? h("span", { title: absolute(t.last_scheduled_for) }, relative(t.last_scheduled_for)) : h("span", { class: "muted" }, "never")),
        h("td", {}, toggle(t, app, refresh)))))));
  }

  return { refresh };
}
