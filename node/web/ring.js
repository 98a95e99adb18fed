// Ring: the partition → owner map as a grid, one cell per partition coloured by owner.
// Cells whose owner changed at the last version change are outlined.

import { api } from './api.js';
import { $, h, svg, memberColour } from './util.js';

const COLS = 24;
const CELL = 26;
const GAP = 3;

let previous = null; // the ring drawn before, to outline what moved

export async function refreshRing() {
  const ring = await api('GET', '/cluster/ring');
  if (previous && previous.version === ring.version) return;
  drawRing(ring);
}

function drawRing(ring) {
  const moved = new Set();
  if (previous && previous.owners.length === ring.owners.length) {
    ring.owners.forEach((o, p) => { if (previous.owners[p] !== o) moved.add(p); });
  }
  previous = ring;
  const rows = Math.ceil(ring.owners.length / COLS);
  const grid = $('ring-grid');
  grid.setAttribute('viewBox', `0 0 ${COLS * (CELL + GAP)} ${rows * (CELL + GAP)}`);
  grid.setAttribute('data-version', ring.version);
  grid.setAttribute('aria-label', `${ring.partitions} partitions over ${ring.members.length} owners, ring version ${ring.version}`);
  const cells = ring.owners.map((owner, p) => {
    const x = (p % COLS) * (CELL + GAP);
    const y = Math.floor(p / COLS) * (CELL + GAP);
    const rect = svg('rect', {
      x, y, width: CELL, height: CELL, rx: 3,
      fill: owner ? memberColour(owner) : '#d1d5db',
      class: moved.has(p) ? 'cell moved' : 'cell',
      'data-partition': p, 'data-owner': owner || '',
    }, svg('title', {}, `partition ${p} → ${owner || 'no owner'}`));
    return rect;
  });
  grid.replaceChildren(...cells);

  const counts = new Map();
  for (const o of ring.owners) counts.set(o, (counts.get(o) || 0) + 1);
  $('ring-version').textContent = ring.version;
  $('ring-summary').textContent = `${ring.partitions} partitions, ${ring.members.length} owners` +
    (moved.size ? `, ${moved.size} moved at this version` : '');
  $('ring-legend').replaceChildren(...[...counts.entries()].sort().map(([owner, n]) => {
    const sw = h('span', { class: 'swatch', 'aria-hidden': 'true' });
    sw.style.background = memberColour(owner);
    return h('li', { 'data-owner': owner }, sw, `${owner}: ${n} partitions`);
  }));
}
