// A rocket's speed over time as an SVG line chart, drawn here (no library).
//
// One point per message, in message-number order, at the message's time; the
// line is dashed where messages are missing between two points. An explosion
// is marked where its message sits.

import { s, num, clock } from './dom.js';

const HEIGHT = 260;
const MARGIN = { top: 16, right: 20, bottom: 36, left: 64 };
/** Above this many points the dots are left out (the line stays). */
const MAX_DOTS = 400;

/** About `count` round steps spanning [min, max]. */
function ticks(min, max, count) {
  if (min === max) return [min];
  const raw = (max - min) / count;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * magnitude).find((m) => m >= raw) || raw;
  const out = [];
  for (let value = Math.ceil(min / step) * step; value <= max + step * 1e-9; value += step) {
    out.push(Math.round(value / step) * step);
  }
  return out;
}

/**
 * The chart for `points` ({number, time (ms), speed, type}), `width` pixels
 * wide. Returns an <svg>, with `data-points` the number of points drawn.
 */
export function speedChart(points, width, labelId) {
  const w = Math.max(280, Math.floor(width));
  const innerW = w - MARGIN.left - MARGIN.right;
  const innerH = HEIGHT - MARGIN.top - MARGIN.bottom;
  const svg = s('svg', {
    class: 'speed-chart',
    width: w,
    height: HEIGHT,
    viewBox: `0 0 ${w} ${HEIGHT}`,
    role: 'img',
    'aria-labelledby': labelId,
    'data-points': points.length,
  });
  if (points.length === 0) {
    svg.append(s('text', { x: w / 2, y: HEIGHT / 2, 'text-anchor': 'middle', class: 'chart-empty' }, 'No messages yet'));
    return svg;
  }

  // Time on the x axis, unless every message has the same time: then the number.
  const times = points.map((p) => p.time);
  const byTime = Math.max(...times) > Math.min(...times);
  const xOf = (p) => (byTime ? p.time : p.number);
  const xs = points.map(xOf);
  let [xMin, xMax] = [Math.min(...xs), Math.max(...xs)];
  if (xMin === xMax) { xMin -= 1; xMax += 1; }
  const speeds = points.map((p) => p.speed);
  let [yMin, yMax] = [Math.min(0, ...speeds), Math.max(...speeds)];
  if (yMin === yMax) yMax = yMin + 1;
  const yTicks = ticks(yMin, yMax, 4);
  yMin = Math.min(yMin, yTicks[0]);
  yMax = Math.max(yMax, yTicks[yTicks.length - 1]);
  const x = (value) => MARGIN.left + ((value - xMin) / (xMax - xMin)) * innerW;
  const y = (value) => MARGIN.top + innerH - ((value - yMin) / (yMax - yMin)) * innerH;
  const fixed = (value) => value.toFixed(1);

  const grid = s('g', { class: 'chart-grid' });
  for (const value of yTicks) {
    grid.append(
      s('line', { x1: MARGIN.left, x2: w - MARGIN.right, y1: fixed(y(value)), y2: fixed(y(value)) }),
      s('text', { x: MARGIN.left - 8, y: fixed(y(value)), 'text-anchor': 'end', 'dominant-baseline': 'middle' }, num(value)),
    );
  }
  const xCount = Math.max(2, Math.min(6, Math.floor(innerW / 110)));
  const xTicks = byTime
    ? Array.from({ length: xCount }, (_, i) => xMin + ((xMax - xMin) * i) / (xCount - 1))
    : ticks(xMin, xMax, xCount).filter((v) => Number.isInteger(v));
  xTicks.forEach((value, i) => {
    // The end labels lean inwards, so they stay inside the chart.
    const anchor = xTicks.length > 1 && i === 0 ? 'start'
      : xTicks.length > 1 && i === xTicks.length - 1 ? 'end' : 'middle';
    grid.append(s('text', {
      x: fixed(x(value)), y: HEIGHT - MARGIN.bottom + 20, 'text-anchor': anchor,
    }, byTime ? clock(value) : `#${value}`));
  });
  grid.append(
    s('line', { class: 'chart-axis', x1: MARGIN.left, x2: w - MARGIN.right, y1: fixed(y(yMin)), y2: fixed(y(yMin)) }),
    s('text', { class: 'chart-axis-label', x: 12, y: MARGIN.top - 4 }, 'speed'),
  );
  svg.append(grid);

  // Solid where the numbers follow each other, dashed over missing messages.
  let solid = '';
  let dashed = '';
  points.forEach((p, i) => {
    const here = `${fixed(x(xOf(p)))},${fixed(y(p.speed))}`;
    if (i === 0) { solid += `M${here}`; return; }
    const before = points[i - 1];
    const there = `${fixed(x(xOf(before)))},${fixed(y(before.speed))}`;
    if (p.number === before.number + 1) solid += `L${here}`;
    else {
      dashed += `M${there}L${here}`;
      solid += `M${here}`;
    }
  });
  if (dashed) svg.append(s('path', { class: 'chart-gap', d: dashed }));
  svg.append(s('path', { class: 'chart-line', d: solid }));

  if (points.length <= MAX_DOTS) {
    const dots = s('g', { class: 'chart-dots' });
    for (const p of points) {
      dots.append(s('circle', {
        class: 'chart-point', cx: fixed(x(xOf(p))), cy: fixed(y(p.speed)), r: 3.5, 'data-number': p.number,
      }, s('title', null, `#${p.number} ${p.type}: speed ${num(p.speed)}`)));
    }
    svg.append(dots);
  }
  const boom = points.find((p) => p.type === 'RocketExploded');
  if (boom) {
    const cx = x(xOf(boom));
    const cy = y(boom.speed);
    const r = 7;
    svg.append(s('g', { class: 'chart-explosion' },
      s('path', { d: `M${fixed(cx - r)},${fixed(cy - r)}L${fixed(cx + r)},${fixed(cy + r)}M${fixed(cx - r)},${fixed(cy + r)}L${fixed(cx + r)},${fixed(cy - r)}` }),
      s('text', { x: fixed(Math.min(cx, w - MARGIN.right - 60)), y: fixed(Math.max(cy - 12, MARGIN.top + 10)), 'text-anchor': 'middle' }, 'exploded'),
      s('title', null, `Exploded at message #${boom.number}`)));
  }
  return svg;
}

/** The speed after each message, in number order: the messages' own arithmetic. */
export function speedSeries(messages) {
  const sorted = [...messages].sort((a, b) => a.number - b.number);
  // The lowest-numbered launch gives the launch speed, as the server counts it.
  const launch = sorted.find((m) => m.type === 'RocketLaunched');
  let launched = false;
  let delta = 0;
  return sorted.map((m) => {
    const body = m.message || {};
    if (m.type === 'RocketSpeedIncreased') delta += Number(body.by) || 0;
    else if (m.type === 'RocketSpeedDecreased') delta -= Number(body.by) || 0;
    if (m === launch) launched = true;
    const base = launched ? Number(launch.message && launch.message.launchSpeed) || 0 : 0;
    return { number: m.number, time: Date.parse(m.time), speed: base + delta, type: m.type };
  });
}
