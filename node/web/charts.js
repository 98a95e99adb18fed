// Charts: requests per second and p99 latency of the busiest commands, as SVG lines
// drawn from the series kept by stats.js.

import { $, h, svg, fmtMs, SERIES_COLOURS } from './util.js';
import { stats, rate } from './stats.js';

const W = 900, H = 200, LEFT = 56, BOTTOM = 22, TOP = 8;
const SHOWN = 6; // lines per chart
const MIN_SPAN = 60; // seconds shown at least, before the first request

// span is the index of the first second shown: the first with a request, or MIN_SPAN
// seconds before the last, whichever is earlier, so that a young node's charts are not
// mostly empty.
function span() {
  const n = stats.t.length;
  let first = n;
  for (const s of stats.commands.values()) {
    const i = s.ops.findIndex((v) => v > 0);
    if (i >= 0 && i < first) first = i;
  }
  return Math.max(0, Math.min(first, n - MIN_SPAN));
}

export function renderCharts() {
  const busiest = [...stats.commands.entries()]
    .map(([cmd, s]) => [cmd, s, s.ops.reduce((a, b) => a + b, 0)])
    .sort((a, b) => b[2] - a[2] || a[0].localeCompare(b[0]))
    .slice(0, SHOWN);
  const colour = new Map(busiest.map(([cmd], i) => [cmd, SERIES_COLOURS[i % SERIES_COLOURS.length]]));
  const from = span();
  const t = stats.t.slice(from);
  const secs = t.length;
  $('charts-span').textContent = secs >= 120 ? `${Math.round(secs / 60)} minutes` : `${secs} seconds`;
  line($('chart-ops'), t, busiest.map(([cmd, s]) => [cmd, s.ops.slice(from)]), colour, (v) => String(+v.toFixed(1)));
  line($('chart-p99'), t, busiest.map(([cmd, s]) => [cmd, s.p99.slice(from)]), colour, (v) => String(+v.toFixed(3)));
  $('chart-legend').replaceChildren(...busiest.map(([cmd]) => {
    const sw = h('span', { class: 'swatch', 'aria-hidden': 'true' });
    sw.style.background = colour.get(cmd);
    return h('li', {}, sw, cmd);
  }));
  const rows = [...stats.commands.entries()].sort((a, b) => a[0].localeCompare(b[0])).map(([cmd, s]) => {
    const last = (arr) => {
      const v = arr.slice(-10).filter((x) => x !== null);
      return v.length ? Math.max(...v) : null;
    };
    return h('tr', { 'data-command': cmd },
      h('th', { scope: 'row' }, cmd),
      h('td', { class: 'num' }, (rate(s.ops, 10) ?? 0).toFixed(1)),
      h('td', { class: 'num' }, (rate(s.errors, 10) ?? 0).toFixed(1)),
      h('td', { class: 'num' }, fmtMs(last(s.p50))),
      h('td', { class: 'num' }, fmtMs(last(s.p99))));
  });
  $('commands-body').replaceChildren(...rows);
}

// line draws series (name, values aligned with t; null is a gap) into the svg.
function line(el, t, series, colour, fmt) {
  const n = t.length;
  el.setAttribute('viewBox', `0 0 ${W} ${H}`);
  let top = 0;
  for (const [, vals] of series) for (const v of vals) if (v !== null && v > top) top = v;
  top = niceCeil(top);
  const x = (i) => LEFT + (n <= 1 ? 0 : (i * (W - LEFT - 8)) / (n - 1));
  const y = (v) => TOP + (H - TOP - BOTTOM) * (1 - v / top);
  const parts = [];
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    parts.push(svg('line', { x1: LEFT, x2: W - 8, y1: y(v), y2: y(v), class: 'grid' }));
    parts.push(svg('text', { x: LEFT - 6, y: y(v) + 4, 'text-anchor': 'end', class: 'axis' }, fmt(v)));
  }
  if (n > 1) {
    for (const i of [0, Math.floor((n - 1) / 2), n - 1]) {
      const d = new Date(t[i] * 1000).toLocaleTimeString('en-GB', { hour12: false });
      parts.push(svg('text', { x: x(i), y: H - 6, 'text-anchor': i === 0 ? 'start' : i === n - 1 ? 'end' : 'middle', class: 'axis' }, d));
    }
  } else {
    parts.push(svg('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'axis' }, 'collecting samples…'));
  }
  for (const [cmd, vals] of series) {
    let d = '';
    vals.forEach((v, i) => {
      if (v === null) return;
      const prev = i > 0 ? vals[i - 1] : null;
      const next = i < vals.length - 1 ? vals[i + 1] : null;
      d += `${prev === null ? 'M' : 'L'}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
      if (prev === null && next === null) d += 'h2'; // a lone second: a short dash
    });
    if (d) parts.push(svg('path', { d, stroke: colour.get(cmd), class: 'series', 'data-command': cmd }));
  }
  el.replaceChildren(...parts);
}

// niceCeil rounds v up to four times 1, 2 or 5 times a power of ten, so that the
// four grid steps are round numbers.
function niceCeil(v) {
  if (!(v > 0)) return 1;
  const step = v / 4;
  const p = 10 ** Math.floor(Math.log10(step));
  for (const m of [1, 2, 5, 10]) if (m * p >= step) return 4 * m * p;
  return 40 * p;
}
