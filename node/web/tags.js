// Tags: the largest tags by key count (GET /tags), and invalidating one on every node
// with a report of what each removed and how long the fan-out took
// (POST /cluster/invalidate-tag).

import { api, ApiError } from './api.js';
import { $, h, fmtInt, fmtMs } from './util.js';
import { confirmAction } from './confirm.js';

const TOP = 20;

let reported = () => {}; // set by setupTags

export function setupTags(report) {
  reported = report;
  $('invalidate-form').addEventListener('submit', (e) => {
    e.preventDefault();
    // Tags are taken exactly as typed: " admin" and "admin" are two tags (PUT does not
    // trim them). Only a blank entry is refused.
    const tag = $('invalidate-tag').value;
    if (tag.trim() === '') return;
    invalidateShowingErrors(tag);
  });
}

function invalidateShowingErrors(tag) {
  invalidate(tag).catch((err) => {
    // Shown beside the form too: the banner alone is cleared by the next poll.
    $('invalidate-result').hidden = false;
    $('invalidate-result').dataset.success = 'false';
    $('invalidate-summary').replaceChildren(h('span', { class: 'error' }, `Tag “${tag}”: failed — ${err.message}`));
    $('invalidate-body').replaceChildren();
    reported(err);
  });
}

export async function refreshTags() {
  const r = await api('GET', `/tags?limit=${TOP}`);
  const most = r.tags.length ? r.tags[0].keys : 1;
  const rows = r.tags.map((t) => {
    const bar = h('span', { class: 'bar' });
    bar.style.width = `${Math.max(1, (100 * t.keys) / most)}%`;
    return h('tr', { 'data-tag': t.tag },
      h('th', { scope: 'row' }, t.tag),
      h('td', { class: 'num' }, fmtInt(t.keys)),
      h('td', { class: 'barcell' }, bar),
      h('td', {}, h('button', {
        type: 'button', class: 'danger small', 'aria-label': `Invalidate tag ${t.tag}`,
        onclick: () => invalidateShowingErrors(t.tag), // the exact tag, not the form's
      }, 'Invalidate…')));
  });
  if (rows.length === 0) rows.push(h('tr', {}, h('td', { colspan: 4, class: 'muted' }, 'No tags.')));
  $('tags-body').replaceChildren(...rows);
}

async function invalidate(tag) {
  if (tag === '') return;
  if (!(await confirmAction(`Invalidate tag “${tag}” on every node? Every entry carrying it is removed.`))) return;
  let r;
  try {
    r = await api('POST', '/cluster/invalidate-tag', { tag });
  } catch (e) {
    // Incomplete: the same report, with the members that did not acknowledge.
    if (!(e instanceof ApiError) || !e.body || !e.body.nodes) throw e;
    r = e.body;
  }
  showResult(tag, r);
  await refreshTags();
}

function showResult(tag, r) {
  $('invalidate-result').hidden = false;
  $('invalidate-result').dataset.tag = tag;
  $('invalidate-result').dataset.success = String(r.success);
  $('invalidate-summary').replaceChildren(r.success
    ? h('span', {}, `Tag “${tag}”: removed `, h('strong', { id: 'invalidate-count' }, String(r.count)),
      ` entries on ${r.nodes.length} nodes in ${fmtMs(r.elapsed_ms)}.`)
    : h('span', { class: 'error' }, `Tag “${tag}”: incomplete — ${r.error}. ${r.count} entries removed so far; the node keeps retrying.`));
  $('invalidate-body').replaceChildren(...r.nodes.map((n) => h('tr', { 'data-node': n.name },
    h('th', { scope: 'row' }, n.name),
    h('td', { class: 'num' }, fmtInt(n.count)),
    h('td', { class: 'num' }, fmtMs(n.elapsed_ms)),
    h('td', { class: n.error ? 'error' : 'muted' }, n.error || '–'))));
}
