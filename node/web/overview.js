// Overview: the members with their state, addresses and figures, the totals, and the
// membership events this node saw.

import { api } from './api.js';
import { $, h, fmtInt, fmtBytes, fmtPct, fmtTime, memberColour } from './util.js';
import { stats, rate } from './stats.js';

export async function refreshOverview() {
  const [m, ring, ev] = await Promise.all([
    api('GET', '/cluster/members'),
    api('GET', '/cluster/ring'),
    api('GET', '/cluster/events?limit=20'),
  ]);
  renderMembers(m.members, ring);
  renderEvents(ev.events);
  return m.members;
}

function renderMembers(members, ring) {
  const order = { alive: 0, suspect: 1, left: 2, dead: 3 };
  members.sort((a, b) => (order[a.state] ?? 9) - (order[b.state] ?? 9) || a.name.localeCompare(b.name));
  let items = 0, bytes = 0, hits = 0, misses = 0, alive = 0;
  const rows = members.map((mb) => {
    const st = mb.stats;
    if (mb.state === 'alive') alive++;
    if (st) { items += st.items; bytes += st.bytes; hits += st.hits; misses += st.misses; }
    const ops = rate(stats.nodes.get(mb.name));
    const swatch = h('span', { class: 'swatch', 'aria-hidden': 'true' });
    swatch.style.background = memberColour(mb.name);
    return h('tr', { 'data-member': mb.name, 'data-state': mb.state },
      h('th', { scope: 'row' }, swatch, mb.name, mb.self ? h('span', { class: 'tag' }, 'this node') : null),
      h('td', {}, h('span', { class: `state state-${mb.state}` }, mb.state)),
      h('td', { class: 'addr' }, mb.http || '–'),
      h('td', { class: 'addr' }, mb.gossip || '–'),
      h('td', { class: 'addr' }, mb.peer || '–'),
      h('td', { class: 'num' }, fmtInt(mb.partitions)),
      h('td', { class: 'num' }, st ? fmtInt(st.items) : '–'),
      h('td', { class: 'num' }, st ? fmtBytes(st.bytes) : '–'),
      h('td', { class: 'num' }, st ? fmtPct(st.hit_ratio) : '–'),
      h('td', { class: 'num', title: mb.stats_error || '' }, mb.stats_error ? 'no answer' : (ops === null ? '–' : ops.toFixed(1))));
  });
  $('members-body').replaceChildren(...rows);
  $('card-alive').textContent = `${alive} of ${members.length}`;
  $('card-ring-version').textContent = ring.version;
  $('card-items').textContent = fmtInt(items);
  $('card-memory').textContent = fmtBytes(bytes);
  $('card-hit-ratio').textContent = hits + misses === 0 ? '–' : fmtPct(hits / (hits + misses));
  let total = null;
  for (const ops of stats.nodes.values()) total = (total ?? 0) + rate(ops);
  $('card-ops').textContent = total === null ? '–' : total.toFixed(1);
  const self = members.find((mb) => mb.self);
  if (self) $('node-name').textContent = self.name;
}

function renderEvents(events) {
  const list = $('events-list');
  if (events.length === 0) {
    list.replaceChildren(h('li', { class: 'muted' }, 'No membership change since this node started.'));
    return;
  }
  list.replaceChildren(...events.map((e) => h('li', { class: `event event-${e.kind}` },
    h('time', { datetime: e.time }, fmtTime(e.time)), ' ',
    h('span', { class: 'kind' }, e.kind), ' ',
    e.member ? h('strong', {}, e.member) : null, e.detail ? ` ${e.detail}` : '')));
}
