// Templates: schedule, next fire times (DST-affected ones flagged), the on/off switch, and
// an editor for the schedule with a live preview of its next fires.

import { ApiError, get, patch, post } from "./api.js";
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

const EDIT_PREVIEW_COUNT = 10;
const DEBOUNCE_MS = 300;
const ZONES = typeof Intl.supportedValuesOf === "function" ? Intl.supportedValuesOf("timeZone") : [];

function localText(fire) {
  // fire.local is ISO with the zone's offset: show its wall-clock part as the zone reads it.
  return fire.local.slice(0, 16).replace("T", " ");
}

function previewList(fires) {
  if (!fires.length) return h("p", { class: "muted" }, "No more runs: the schedule has ended.");
  return h("ol", { class: "edit-preview", id: "edit-preview", "aria-label": "Next 10 fire times" }, fires.map((fire) =>
    h("li", { class: fire.dst_affected ? "dst" : null, "data-dst": fire.dst_affected ? "true" : "false" },
      h("span", { class: "mono" }, localText(fire)),
      h("span", { class: "second" }, `${fire.at.slice(0, 16).replace("T", " ")} UTC`),
      fire.dst_affected ? h("span", { class: "pill tone-retried", title: "In a repeated hour or moved by a clock change" }, "DST") : null)));
}

function field(id, label, input, hint) {
  const error = h("p", { class: "field-error", id: `${id}-error`, hidden: true });
  input.setAttribute("aria-describedby", `${id}-error`);
  return { box: h("label", { class: "field", for: id }, label, input, hint ? h("span", { class: "hint" }, hint) : null, error), error, input };
}

// The schedule editor of one template: the fields of its kind (a cron template stays cron,
// an interval one interval: PATCH cannot change the kind), the time zone, the next 10 fires
// as you type (POST /schedules/preview, debounced), errors under their field, and Save
// (PATCH) behind a confirmation. Calls close(saved) when done.
function editor(template, app, close) {
  const isCron = template.schedule_type === "cron";
  const schedule = isCron
    ? field("edit-cron", "Cron expression", h("input", { id: "edit-cron", name: "cron", value: template.cron_expression,
      autocomplete: "off", spellcheck: "false", required: true, maxlength: 200 }), "minute hour day month weekday, or @daily")
    : field("edit-interval", "Every (seconds)", h("input", { id: "edit-interval", name: "interval_seconds", type: "number",
      value: template.interval_seconds, min: "0.001", max: String(366 * 86400), step: "any", required: true, inputmode: "decimal" }));
  const zone = field("edit-timezone", "Time zone", h("input", { id: "edit-timezone", name: "timezone", value: template.timezone,
    list: "edit-zones", autocomplete: "off", spellcheck: "false", required: true, maxlength: 64 }));
  const zones = h("datalist", { id: "edit-zones" }, ZONES.map((z) => h("option", { value: z })));
  const fields = { cron: schedule, interval_seconds: schedule, timezone: zone };
  const formError = h("p", { class: "field-error", id: "edit-form-error", hidden: true });
  const preview = h("div", { class: "edit-fires", "aria-live": "polite" }, h("p", { class: "muted" }, "Loading the next fires…"));
  const actions = h("div", { class: "edit-actions" });
  let timer = null;
  let asked = 0;

  function body() {
    const text = schedule.input.value.trim();
    const base = { timezone: zone.input.value.trim() };
    if (isCron) return { ...base, cron: text };
    return { ...base, interval_seconds: text === "" ? null : Number(text) };
  }

  function showErrors(list) {
    for (const f of [schedule, zone]) {
      f.error.hidden = true;
      f.input.removeAttribute("aria-invalid");
    }
    formError.hidden = true;
    for (const { field: name, reason } of list) {
      const target = fields[name] || (name === "cron_expression" ? schedule : null);
      if (target) {
        target.error.textContent = reason;
        target.error.hidden = false;
        target.input.setAttribute("aria-invalid", "true");
      } else {
        formError.textContent = reason;
        formError.hidden = false;
      }
    }
  }

  function localProblems(draft) {
    const problems = [];
    if (isCron && !draft.cron) problems.push({ field: "cron", reason: "enter a cron expression" });
    if (!isCron && (draft.interval_seconds === null || Number.isNaN(draft.interval_seconds))) {
      problems.push({ field: "interval_seconds", reason: "enter a number of seconds" });
    }
    if (!draft.timezone) problems.push({ field: "timezone", reason: "enter a time zone, e.g. Europe/Berlin" });
    return problems;
  }

  async function refreshPreview() {
    const draft = body();
    const mine = ++asked;
    const problems = localProblems(draft);
    if (problems.length) {
      showErrors(problems);
      return;
    }
    // Previews run from the template's own start, as its next_run_at will once saved.
    const start = template.start_at || template.created_at;
    try {
      const fires = await post("/schedules/preview", { ...draft, start_at: start, count: EDIT_PREVIEW_COUNT });
      if (mine !== asked) return; // a later keystroke asked again: its answer wins
      showErrors([]);
      clear(preview).append(previewList(fires));
    } catch (error) {
      if (mine !== asked) return;
      if (error instanceof ApiError && error.status === 422 && error.fields.length) showErrors(error.fields);
      else showErrors([{ field: "form", reason: error instanceof ApiError ? error.explanation : String(error) }]);
    }
  }

  function changed() {
    clearTimeout(timer);
    showSave();
    timer = setTimeout(refreshPreview, DEBOUNCE_MS);
  }

  async function save() {
    const draft = body();
    actions.querySelectorAll("button").forEach((b) => { b.disabled = true; });
    try {
      await patch(`/templates/${template.id}`, draft);
      app.toast(`Schedule of ${template.name} saved`);
      close(true);
    } catch (error) {
      if (error instanceof ApiError && error.status === 422 && error.fields.length) showErrors(error.fields);
      else app.toast(error instanceof ApiError ? error.explanation : String(error), "error");
      showSave();
    }
  }

  function showSave() {
    clear(actions).append(
      h("button", { type: "submit", class: "primary", id: "edit-save" }, "Save"),
      h("button", { type: "button", class: "ghost", id: "edit-cancel", onclick: () => close(false) }, "Cancel"));
  }

  function confirmSave() {
    if (localProblems(body()).length) { showErrors(localProblems(body())); return; }
    const yes = h("button", { type: "button", class: "primary", id: "edit-confirm", onclick: save }, "Yes, save");
    clear(actions).append(
      h("span", { class: "muted" }, `Change the schedule of ${template.name}? Its next run follows the new schedule.`),
      yes,
      h("button", { type: "button", class: "ghost", id: "edit-back", onclick: () => { showSave(); form.querySelector("#edit-save").focus(); } }, "Back"));
    yes.focus();
  }

  const form = h("form", {
    class: "editor", id: `edit-${template.id}`, "aria-label": `Edit the schedule of ${template.name}`, novalidate: true,
    onsubmit: (event) => { event.preventDefault(); confirmSave(); },
    onkeydown: (event) => { if (event.key === "Escape") { event.preventDefault(); close(false); } },
    oninput: changed,
  },
  h("div", { class: "edit-fields" }, schedule.box, zone.box, zones),
  formError,
  h("div", {}, h("h3", {}, "Next 10 fires"), h("p", { class: "hint" }, `Local time in the chosen zone; UTC below. Fires marked DST fall in a repeated hour or were moved by a clock change.`), preview),
  actions);
  showSave();
  refreshPreview();
  return { form, focus: () => schedule.input.focus() };
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

  // While a schedule is being edited the list holds still (the auto-refresh would
  // replace the form under the user's fingers); it refreshes again when the editor closes.
  let editing = null;

  function edit(template, row) {
    if (editing) return;
    const done = (saved) => {
      editing.row.remove();
      const opener = editing.opener;
      editing = null;
      if (saved) refresh();
      else opener.focus();
    };
    const open = editor(template, app, done);
    const editorRow = h("tr", { class: "editor-row" }, h("td", { colspan: 6 }, open.form));
    row.after(editorRow);
    editing = { row: editorRow, opener: row.querySelector(".edit-schedule") };
    open.focus();
  }

  // What sets the template apart: declared in code, stops on a failure, and why it is off.
  function traits(t) {
    const tags = [];
    if (t.declared) tags.push(h("span", { class: "tag", title: "@app.periodic: each start of the app reconciles it" }, "declared in code"));
    if (t.on_job_failure === "disable") tags.push(h("span", { class: "tag", title: "switched off when one of its jobs fails for good" }, "stops on failure"));
    const why = !t.active && t.last_error ? h("span", { class: "template-error" }, t.last_error) : null;
    return tags.length || why ? h("div", { class: "traits" }, ...tags, why) : null;
  }

  async function refresh() {
    if (editing) return;
    // One page (the API pages templates): the first 500, oldest first.
    const list = (await get("/templates", { limit: 500 })).items;
    const fireTimes = await Promise.all(list.map((t, i) => (i < PREVIEW_LIMIT ? preview(t) : null)));
    clear(results);
    if (!list.length) {
      results.append(empty("No templates yet", "POST /templates with a cron expression or interval_seconds to create one."));
      return;
    }
    // On a phone each template becomes a card of labelled cells (stack-narrow).
    results.append(h("table", { class: "stack-narrow" },
      h("thead", {}, h("tr", {}, ["Template", "Schedule", "Next fires", "Last fired", "Active", ""].map((n) => h("th", {}, n)))),
      h("tbody", {}, list.map((t, i) => h("tr", { "data-template-id": t.id },
        h("td", {}, h("strong", {}, t.name), h("span", { class: "second" }, t.task_type, " · ",
          h("a", { href: `#/jobs?template_id=${t.id}` }, "jobs")), traits(t)),
        h("td", { "data-label": "Schedule" }, schedule(t)),
        h("td", { class: "fires", "data-label": "Next fires" }, fires(t, fireTimes[i])),
        h("td", { "data-label": "Last fired" }, t.last_scheduled_for ? h("span", { title: absolute(t.last_scheduled_for) }, relative(t.last_scheduled_for)) : h("span", { class: "muted" }, "never")),
        h("td", { "data-label": "Active" }, toggle(t, app, refresh)),
        h("td", {}, h("button", { type: "button", class: "edit-schedule", "aria-label": `Edit the schedule of ${t.name}`,
          onclick: (event) => edit(t, event.currentTarget.closest("tr")) }, "Edit schedule")))))));
  }

  return { refresh };
}
