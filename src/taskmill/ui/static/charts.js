// Small inline-SVG charts over per-minute buckets: [{at: Date, values: {name: n}}].

import { clock, h, s } from "./dom.js";

const WIDTH = 640;
const HEIGHT = 190;
const PAD = { top: 10, right: 8, bottom: 24, left: 38 };
const PLOT_W = WIDTH - PAD.left - PAD.right;
const PLOT_H = HEIGHT - PAD.top - PAD.bottom;

/** A round upper bound for the y axis: 1, 2, 5, 10, 20, 50... */
function niceMax(value) {
  if (value <= 1) return 1;
  const magnitude = 10 ** Math.floor(Math.log10(value));
  const step = [1, 2, 5, 10].find((m) => m * magnitude >= value);
  return step * magnitude;
}

function frame(label, yTicks, buckets) {
  const svg = s("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": label });
  const axis = s("g", { class: "axis" });
  for (const [value, text] of yTicks) {
    const y = PAD.top + PLOT_H - value * PLOT_H;
    svg.append(s("line", { class: "grid-line", x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y }));
    axis.append(s("text", { x: PAD.left - 6, y: y + 3.5, "text-anchor": "end" }, text));
  }
  const step = PLOT_W / buckets.length;
  buckets.forEach((bucket, i) => {
    const last = i === buckets.length - 1;
    if (i % 15 !== 0 && !last) return;
    const x = PAD.left + step * i + step / 2;
    const anchor = last ? "end" : i === 0 ? "start" : "middle";
    axis.append(s("text", { x: last ? WIDTH - PAD.right : x, y: HEIGHT - 6, "text-anchor": anchor },
      last ? "now" : clock(bucket.at)));
  });
  svg.append(axis);
  return { svg, step };
}

function emptyLabel(svg, text) {
  svg.append(s("text", { class: "empty", x: PAD.left + PLOT_W / 2, y: PAD.top + PLOT_H / 2,
    "text-anchor": "middle" }, text));
}

function describe(bucket, series) {
  const parts = series.map((name) => `${bucket.values[name] ?? 0} ${name}`);
  return `${clock(bucket.at)} — ${parts.join(", ")}`;
}

/** Stacked bars per minute, one colour per series (CSS class fill-<name>). */
export function stackedBars(buckets, series, { label, emptyText }) {
  const totals = buckets.map((b) => series.reduce((sum, name) => sum + (b.values[name] ?? 0), 0));
  const top = niceMax(Math.max(0, ...totals));
  const ticks = [[0, "0"], [0.5, String(top / 2)], [1, String(top)]].filter(
    ([, text]) => Number.isInteger(Number(text)));
  const { svg, step } = frame(label, ticks, buckets);
  const barWidth = Math.max(1, step * 0.7);
  buckets.forEach((bucket, i) => {
    const x = PAD.left + step * i + (step - barWidth) / 2;
    let base = PAD.top + PLOT_H;
    const group = s("g", { "data-minute": bucket.at.toISOString() });
    group.append(s("title", {}, describe(bucket, series)));
    group.append(s("rect", { class: "hover-bar", x: PAD.left + step * i, y: PAD.top, width: step,
      height: PLOT_H }));
    for (const name of series) {
      const value = bucket.values[name] ?? 0;
      if (!value) continue;
      const height = (value / top) * PLOT_H;
      base -= height;
      group.append(s("rect", { class: `fill-${name}`, x, y: base, width: barWidth,
        height: Math.max(height, 1), rx: Math.min(2, barWidth / 3) }));
    }
    svg.append(group);
  });
  if (totals.every((t) => t === 0)) emptyLabel(svg, emptyText);
  return h("div", { class: "chart" }, svg);
}

/** A 0–100 % line per minute; minutes with nothing to measure are gaps. */
export function percentLine(buckets, ratio, { label, emptyText, title }) {
  const ticks = [[0, "0%"], [0.5, "50%"], [1, "100%"]];
  const { svg, step } = frame(label, ticks, buckets);
  const points = buckets.map((bucket, i) => {
    const value = ratio(bucket);
    if (value === null) return null;
    return { x: PAD.left + step * i + step / 2, y: PAD.top + PLOT_H - value * PLOT_H, value, bucket };
  });
  let path = "";
  let pen = false;
  for (const point of points) {
    if (!point) { pen = false; continue; }
    path += `${pen ? "L" : "M"}${point.x.toFixed(1)},${point.y.toFixed(1)}`;
    pen = true;
  }
  if (path) svg.append(s("path", { class: "line", d: path }));
  for (const point of points.filter(Boolean)) {
    svg.append(s("circle", { class: "point", cx: point.x, cy: point.y, r: 2.5 },
      s("title", {}, `${clock(point.bucket.at)} — ${title(point.bucket)}`)));
  }
  if (!points.some(Boolean)) emptyLabel(svg, emptyText);
  return h("div", { class: "chart" }, svg);
}

export function legend(series) {
  return h("div", { class: "legend" }, series.map((name) => h("span", { class: `tone-${name}` }, name)));
}
