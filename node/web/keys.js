// Keys: search by key prefix (POST /search {q}) or tag ({tag_any}); open a key to see its
// value, TTL left and tags (POST /keys/bulk/get); delete it (POST /keys/bulk/delete). The
// bulk routes take the key in the body: in a path, a key such as "." or ".." would be
// collapsed by the browser before it is sent.

import { api } from './api.js';
import { $, h, fmtTTL } from './util.js';
import { confirmAction } from './confirm.js';

const LIMIT = 100; // the API's default page; the search says when there may be more

let current = null; // the key shown in the detail panel
let failed = () => () => {}; // set by setupKeys

// Errors show beside what failed, and go to report (the banner, or the login form on a
// 401) as well: the banner alone is cleared by the next poll.
export function setupKeys(report) {
  failed = (where) => (err) => { $(where).textContent = `Failed: ${err.message}`; report(err); };
  $('search-form').addEventListener('submit', (e) => {
    e.preventDefault();
    search().catch(failed('search-status'));
  });
  $('key-delete').addEventListener('click', () => deleteKey().catch(failed('key-status')));
}

async function search() {
  const mode = $('search-mode').value;
  const q = $('search-q').value.trim();
  const body = mode === 'tag' ? { tag_any: [q], limit: LIMIT } : { q, limit: LIMIT };
  if (mode === 'tag' && q === '') {
    $('search-status').textContent = 'Enter a tag.';
    return;
  }
  $('search-status').textContent = 'Searching…';
  const r = await api('POST', '/search', body);
  $('search-status').textContent = `${r.keys.length}${r.keys.length === LIMIT ? '+' : ''} keys`;
  $('keys-body').replaceChildren(...r.keys.map((k) => h('tr', { 'data-key': k.key },
    h('td', {}, h('button', { type: 'button', class: 'link', onclick: () => openKey(k.key).catch(failed('search-status')) }, k.key)),
    h('td', { class: 'num' }, fmtTTL(k.ttl_ms)),
    h('td', {}, ...k.tags.map((t) => h('span', { class: 'tag' }, t))))));
  if (r.keys.length === 0) {
    $('keys-body').replaceChildren(h('tr', {}, h('td', { colspan: 3, class: 'muted' }, 'No key matches.')));
  }
}

async function openKey(key) {
  // Numbers are kept as sent: a JSON value's 2^53 + 1 is not shown rounded.
  const r = await api('POST', '/keys/bulk/get', { keys: [key] }, { exactNumbers: true });
  const e = r.items[0];
  const panel = $('key-detail');
  panel.hidden = false;
  $('key-name').textContent = key;
  $('key-status').textContent = '';
  current = key;
  if (!e) {
    $('key-value').textContent = '(gone: expired, deleted or invalidated)';
    $('key-ttl').textContent = $('key-tags').textContent = $('key-created').textContent = '–';
    return;
  }
  $('key-value').textContent = typeof e.value === 'string' ? e.value : JSON.stringify(e.value, null, 2);
  $('key-ttl').textContent = fmtTTL(e.ttl_ms);
  $('key-tags').replaceChildren(...(e.tags.length ? e.tags.map((t) => h('span', { class: 'tag' }, t)) : ['none']));
  $('key-created').textContent = new Date(e.created_ms).toLocaleString('en-GB');
}

async function deleteKey() {
  if (current === null) return;
  const key = current;
  if (!(await confirmAction(`Delete key “${key}”?`))) return;
  const r = await api('POST', '/keys/bulk/delete', { keys: [key] });
  $('key-status').textContent = r.count > 0 ? 'Deleted.' : 'It was already gone.';
  $('key-value').textContent = '(deleted)';
  const row = document.querySelector(`#keys-body tr[data-key="${CSS.escape(key)}"]`);
  if (row) row.remove();
}
