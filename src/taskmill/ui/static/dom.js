// DOM building and formatting. Text always goes in as text nodes (never innerHTML),
// so nothing a job's payload or error holds can become markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function build(element, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      element.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(element.dataset, value);
    } else {
      element.setAttribute(name, value === true ? "" : String(value));
    }
  }
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element: h("a", {href: "#/"}, "text", child, ...). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element, same shape as h(). */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

export function clear(node) {
  while (node.firstChild) node.firstChild.remove();
  return node;
}

export function pill(status, label) {
  return h("span", { class: `pill tone-${status}`, "data-status": status }, label || status.replace("_", " "));
}

export function empty(title, text) {
  return h("div", { class: "empty-state" }, h("strong", {}, title), text ? h("span", {}, text) : null);
}

export function notice(kind, text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
}

// -- time ----------------------------------------------------------------------------

export function parseTime(value) {
  return value ? new Date(value) : null;
}

function plural(n, unit) {
  return `${n} ${unit}${n === 1 ? "" : "s"}`;
}

/** "12 s", "3 min", "2 h", "4 days" for a number of seconds. */
export function span(seconds) {
  const abs = Math.abs(seconds);
  if (abs < 0.001) return "<1 ms";
  if (abs < 1) return `${Math.round(abs * 1000)} ms`;
  if (abs < 90) return `${Math.round(abs)} s`;
  if (abs < 90 * 60) return `${Math.round(abs / 60)} min`;
  if (abs < 36 * 3600) return `${Math.round(abs / 3600)} h`;
  return plural(Math.round(abs / 86400), "day");
}

/** "5 s ago" / "in 3 min", with the exact local time as a tooltip. */
export function relative(value) {
  const date = parseTime(value);
  if (!date) return h("span", { class: "muted" }, "—");
  const seconds = (date.getTime() - Date.now()) / 1000;
  const text = Math.abs(seconds) < 1 ? "now" : seconds < 0 ? `${span(seconds)} ago` : `in ${span(seconds)}`;
  return h("time", { datetime: date.toISOString(), title: absolute(date) }, text);
}

export function absolute(value) {
  const date = value instanceof Date ? value : parseTime(value);
  if (!date) return "—";
  return date.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function clock(date) {
  return date.toLocaleTimeString(undefined, { hour: "2-digit", minute: "2-digit" });
}

/** A duration in seconds, precise when short: "45 ms", "2.4 s", "3 min". */
export function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 10 && seconds >= 1) return `${seconds.toFixed(1)} s`;
  return span(seconds);
}

export function between(start, end) {
  const a = parseTime(start);
  const b = parseTime(end);
  if (!a || !b) return null;
  return Math.max(0, (b.getTime() - a.getTime()) / 1000);
}

export function shortId(id) {
  return id ? id.slice(0, 8) : "—";
}

export function json(value) {
  return h("pre", { class: "json" }, JSON.stringify(value, null, 2) ?? "null");
}

export function percent(part, whole) {
  if (!whole) return "—";
  const value = (100 * part) / whole;
  return `${value < 10 && value > 0 ? value.toFixed(1) : Math.round(value)}%`;
}
