// Bulk cancel and retry: a confirmation dialog saying how many jobs, then the ids sent in
// chunks of 100 (the API's bound) with a progress bar, then a summary.

import { ApiError, post, request, storedKey } from "./api.js";
import { clear, h } from "./dom.js";

export const BULK_LIMIT = 1000; // jobs per bulk action: the UI's bound, said in the dialog
const CHUNK = 100; // ids per request: the API's bound
const VERBS = {
  cancel: { label: "Cancel", done: "cancelled", path: "/jobs/bulk/cancel" },
  retry: { label: "Retry", done: "retried", path: "/jobs/bulk/retry" },
};

// Whether the signed-in key may write jobs. There is no endpoint that lists a key's
// scopes: asking to cancel a job id that cannot exist answers 200 (not_found, nothing
// changes) with jobs:write and 403 without. Asked once per key and tab.
const known = new Map();
export function canWrite() {
  const key = storedKey();
  if (!known.has(key)) {
    known.set(key, request("POST", VERBS.cancel.path, { body: { ids: ["scope-probe"] } })
      .then(() => true)
      .catch((error) => {
        if (error instanceof ApiError && error.status === 403) return false;
        known.delete(key); // unknown (network): ask again next time
        return false;
      }));
  }
  return known.get(key);
}

function plural(n, word) {
  return `${n.toLocaleString()} ${word}${n === 1 ? "" : "s"}`;
}

/**
 * Open the dialog for `verb` ("cancel" | "retry") over the ids `collect(limit)` resolves
 * to (at most `limit`; one more tells there were more). `what` describes them
 * ("matching these filters"); `onDone` runs after the dialog closes.
 */
export function bulkDialog({ verb, what, collect, onDone }) {
  const { label, done: doneWord } = VERBS[verb];
  const body = h("div", { class: "dialog-body" }, h("p", {}, "Counting jobs…"));
  const title = h("h2", { id: "bulk-title" }, `${label} jobs`);
  const dialog = h("dialog", { id: "bulk-dialog", class: "dialog", "aria-labelledby": "bulk-title" }, title, body);
  let running = false;
  dialog.addEventListener("cancel", (event) => { if (running) event.preventDefault(); });
  dialog.addEventListener("close", () => { dialog.remove(); if (onDone) onDone(); });
  document.body.append(dialog);
  dialog.showModal();

  const close = () => dialog.close();
  const closeButton = (text) => h("button", { type: "button", id: "bulk-close", onclick: close }, text);

  function fail(error) {
    running = false;
    clear(body).append(
      h("p", { class: "notice error", role: "alert" }, error instanceof ApiError ? error.explanation : String(error)),
      h("div", { class: "dialog-actions" }, closeButton("Close")));
    body.querySelector("#bulk-close").focus();
  }

  collect(BULK_LIMIT + 1).then((found) => {
    const ids = found.slice(0, BULK_LIMIT);
    if (!ids.length) {
      clear(body).append(h("p", {}, `No jobs ${what} can be ${doneWord}.`),
        h("div", { class: "dialog-actions" }, closeButton("Close")));
      body.querySelector("#bulk-close").focus();
      return;
    }
    const more = found.length > BULK_LIMIT;
    const confirm = h("button", { type: "button", id: "bulk-confirm", class: verb === "cancel" ? "danger solid" : "primary",
      onclick: () => run(ids) }, `${label} ${plural(ids.length, "job")}`);
    clear(body).append(
      h("p", { id: "bulk-count" }, more
        ? `More than ${BULK_LIMIT.toLocaleString()} jobs ${what}. One action handles at most ${BULK_LIMIT.toLocaleString()}: the first ${BULK_LIMIT.toLocaleString()} listed will be ${doneWord}; run it again for the rest.`
        : `${plural(ids.length, "job")} ${what} will be ${doneWord}.`),
      h("div", { class: "dialog-actions" }, closeButton("Keep them"), confirm));
    confirm.focus();
  }).catch(fail);

  async function run(ids) {
    running = true;
    const bar = h("progress", { id: "bulk-progress", max: ids.length, value: 0 });
    const status = h("p", { id: "bulk-status", role: "status" }, `0 / ${ids.length}`);
    clear(body).append(bar, status);
    const tally = { [doneWord]: 0, skipped: 0 };
    try {
      for (let start = 0; start < ids.length; start += CHUNK) {
        const answer = await post(VERBS[verb].path, { ids: ids.slice(start, start + CHUNK) });
        for (const item of answer.items) {
          if (item.outcome === doneWord) tally[doneWord] += 1;
          else tally.skipped += 1;
        }
        const sent = Math.min(start + CHUNK, ids.length);
        bar.value = sent;
        status.textContent = `${sent} / ${ids.length}`;
      }
    } catch (error) {
      fail(error);
      return;
    }
    running = false;
    const summary = h("p", { id: "bulk-summary" },
      `${tally[doneWord].toLocaleString()} ${doneWord}, ${tally.skipped.toLocaleString()} skipped`,
      tally.skipped ? " (finished, changed meanwhile, or not found)" : "", ".");
    body.append(summary, h("div", { class: "dialog-actions" }, closeButton("Close")));
    body.querySelector("#bulk-close").focus();
  }
}
