// The dashboard's entry point: login and logout, the views behind the URL's #hash, and
// one polling loop that refreshes the view on screen every POLL_MS.

import { api, login, logout, session, ApiError, Unreachable } from './api.js';
import { $ } from './util.js';
import { pollStats, resetStats } from './stats.js';
import { refreshOverview } from './overview.js';
import { refreshRing } from './ring.js';
import { setupKeys } from './keys.js';
import { setupTags, refreshTags } from './tags.js';
import { renderCharts } from './charts.js';

const VIEWS = ['overview', 'ring', 'keys', 'tags', 'charts'];
const POLL_MS = 2000;

let timer = null;
let running = false;

function currentView() {
  const v = location.hash.slice(1);
  return VIEWS.includes(v) ? v : 'overview';
}

function banner(msg, kind) {
  const b = $('banner');
  b.hidden = !msg;
  b.textContent = msg || '';
  b.className = kind || '';
}

// report shows what went wrong: an unreachable node, an ended session, or a refusal.
function report(err) {
  if (err instanceof Unreachable) {
    banner(`Node unreachable: ${err.message}. Retrying every ${POLL_MS / 1000} s…`, 'unreachable');
  } else if (err instanceof ApiError && err.status === 401) {
    showLogin('Your session ended (the token expired or the credentials changed): log in again.');
  } else {
    banner(`Error: ${err.message}`, 'failed');
  }
}

async function refresh() {
  const view = currentView();
  await pollStats();
  if (view === 'overview') await refreshOverview();
  else if (view === 'ring') await refreshRing();
  else if (view === 'tags') await refreshTags();
  else if (view === 'charts') renderCharts();
  banner('');
  $('updated').textContent = `updated ${new Date().toLocaleTimeString('en-GB', { hour12: false })}`;
}

// loop refreshes now and then every POLL_MS, never two refreshes at once.
async function loop() {
  clearTimeout(timer);
  if (!session.token) return;
  if (running) return;
  running = true;
  try {
    await refresh();
  } catch (e) {
    report(e);
  } finally {
    running = false;
  }
  if (session.token) timer = setTimeout(loop, POLL_MS);
}

function showView() {
  const view = currentView();
  for (const v of VIEWS) {
    $(`view-${v}`).hidden = v !== view;
    const link = $(`nav-${v}`);
    if (v === view) link.setAttribute('aria-current', 'page'); else link.removeAttribute('aria-current');
  }
  document.title = `TagCache · ${view}`;
  loop();
}

function showLogin(message) {
  clearTimeout(timer);
  logout();
  resetStats();
  banner('');
  $('app').hidden = true;
  $('login-view').hidden = false;
  $('login-error').textContent = message || '';
  $('login-password').value = '';
  $('login-username').focus();
}

function showApp() {
  $('login-view').hidden = true;
  $('app').hidden = false;
  showView();
  // Name the node this page talks to, whatever the first view.
  api('GET', '/cluster/members').then((r) => {
    const self = r.members.find((m) => m.self);
    if (self) $('node-name').textContent = self.name;
  }).catch(() => {}); // the loop reports errors
}

$('login-form').addEventListener('submit', async (e) => {
  e.preventDefault();
  $('login-error').textContent = '';
  $('login-submit').disabled = true;
  try {
    await login($('login-username').value, $('login-password').value);
    showApp();
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) $('login-error').textContent = 'Wrong username or password.';
    else if (err instanceof Unreachable) $('login-error').textContent = `Node unreachable: ${err.message}.`;
    else $('login-error').textContent = `Login failed: ${err.message}`;
  } finally {
    $('login-submit').disabled = false;
  }
});

$('logout').addEventListener('click', () => showLogin('Logged out.'));
window.addEventListener('hashchange', () => { if (session.token) showView(); });
setupKeys(report);
setupTags(report);

if (session.token) showApp(); else showLogin();
