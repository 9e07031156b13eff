// The shell: sign-in, hash routing, auto-refresh, toasts. Pages live in their own modules
// and export mount(container, params, app) -> {refresh}.

import { ApiError, forgetKey, onUnauthorized, request, storedKey, storeKey } from "./api.js";
import { clear, h, notice } from "./dom.js";
import * as failed from "./failed.js";
import * as job from "./job.js";
import * as jobs from "./jobs.js";
import * as overview from "./overview.js";
import * as queues from "./queues.js";
import * as templates from "./templates.js";
import * as workers from "./workers.js";

const REFRESH_MS = 5000;
const main = document.getElementById("main");
const liveButton = document.getElementById("live");
const liveLabel = document.getElementById("live-label");
const toastBox = document.getElementById("toast");

const state = { page: null, live: true, lastOk: null };

function route() {
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, search] = hash.split("?");
  const params = new URLSearchParams(search || "");
  const parts = path.split("/").filter(Boolean);
  if (parts[0] === "jobs" && parts[1]) return { tab: "jobs", module: job, params, id: decodeURIComponent(parts[1]) };
  const pages = { jobs, failed, queues, templates, workers };
  if (pages[parts[0]]) return { tab: parts[0], module: pages[parts[0]], params };
  return { tab: "overview", module: overview, params };
}

let toastTimer = null;
function toast(message, kind = "info") {
  toastBox.textContent = message;
  toastBox.className = `toast ${kind}`;
  toastBox.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => { toastBox.hidden = true; }, 4000);
}

const app = {
  toast,
  navigate(hash) { location.hash = hash; },
  refresh: () => refresh(),
};

function setTab(tab) {
  for (const link of document.querySelectorAll(".tabs a")) {
    if (link.dataset.tab === tab) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function showAlert(error) {
  const slot = document.getElementById("alert");
  if (!slot) return;
  clear(slot);
  if (error) slot.append(notice("error", error instanceof ApiError ? error.explanation : String(error)));
}

// One refresh at a time per page; a request made meanwhile (a filter changed) runs right
// after, so it is never lost. A page replaced mid-refresh is ignored when it answers.
async function refresh() {
  const page = state.page;
  if (!page) return;
  if (page.busy) { page.again = true; return; }
  page.busy = true;
  try {
    await page.refresh();
    if (page === state.page) {
      state.lastOk = new Date();
      liveButton.classList.remove("stale");
      showAlert(null);
    }
  } catch (error) {
    if (page === state.page) {
      liveButton.classList.add("stale");
      if (!(error instanceof ApiError && error.status === 401)) showAlert(error);
    }
  } finally {
    page.busy = false;
    paintLive();
  }
  if (page.again && page === state.page) {
    page.again = false;
    await refresh();
  }
}

function paintLive() {
  const when = state.lastOk ? state.lastOk.toLocaleTimeString() : "";
  liveLabel.textContent = state.live ? `Live${when ? ` · ${when}` : ""}` : `Paused${when ? ` · ${when}` : ""}`;
  liveButton.setAttribute("aria-pressed", String(state.live));
}

function render() {
  if (!storedKey()) { signIn(); return; }
  document.body.classList.remove("signed-out");
  const current = route();
  setTab(current.tab);
  clear(main);
  const alert = h("div", { id: "alert" });
  const container = h("div", { id: "page", "data-page": current.tab });
  main.append(alert, container);
  state.page = current.module.mount(container, current, app);
  state.lastOk = null;
  refresh();
}

function signIn(message) {
  state.page = null;
  document.body.classList.add("signed-out");
  clear(main);
  const input = h("input", { id: "api-key", type: "password", name: "api-key", autocomplete: "off",
    placeholder: "tm_…", "aria-label": "API key", required: true, spellcheck: "false" });
  const error = h("div", { id: "signin-error" }, message ? notice("error", message) : null);
  const submit = h("button", { class: "primary", type: "submit" }, "Open dashboard");
  const form = h("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      submit.disabled = true;
      clear(error);
      try {
        await request("GET", "/jobs?limit=1", { key });
      } catch (failure) {
        // 403: a valid key without jobs:read; pages it cannot read say so themselves.
        if (!(failure instanceof ApiError && failure.status === 403)) {
          error.append(notice("error", failure instanceof ApiError ? failure.explanation : String(failure)));
          submit.disabled = false;
          input.select();
          return;
        }
      }
      storeKey(key);
      render();
    },
  }, input, error, submit);
  main.append(h("div", { class: "signin" }, h("div", { class: "panel" },
    h("h1", {}, "Sign in to taskmill"),
    h("p", {}, "Enter an API key. It is kept in this browser tab only, until you close it or sign out."),
    form,
    h("p", { class: "hint" }, "Create one on the server with ", h("code", {}, "taskmill api-keys create --admin"), "."))));
  input.focus();
}

onUnauthorized((error) => {
  forgetKey();
  signIn(error.explanation);
});

document.getElementById("sign-out").addEventListener("click", () => {
  forgetKey();
  signIn();
});

liveButton.addEventListener("click", () => {
  state.live = !state.live;
  paintLive();
  if (state.live) refresh();
});

window.addEventListener("hashchange", render);
document.addEventListener("visibilitychange", () => { if (!document.hidden && state.live) refresh(); });
setInterval(() => { if (state.live && !document.hidden) refresh(); }, REFRESH_MS);

render();
