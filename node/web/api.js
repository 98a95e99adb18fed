// The dashboard's one way to the HTTP API: the bearer token, JSON in and out, and
// errors that tell an unreachable node from a refused request.

const TOKEN_KEY = 'tagcache.token';
const TIMEOUT_MS = 8000;

// ApiError is a reply other than 2xx; body is the JSON the node sent ({error: …}).
export class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// Unreachable means no reply at all: the node is down, restarting or cut off.
export class Unreachable extends Error {}

// The token lives in sessionStorage: it survives a reload, not the tab, and is never
// put in a URL.
export const session = {
  get token() { return sessionStorage.getItem(TOKEN_KEY); },
  set token(t) {
    if (t) sessionStorage.setItem(TOKEN_KEY, t); else sessionStorage.removeItem(TOKEN_KEY);
  },
};

// exactNumbers keeps every number the reply spells differently from what a JS number
// would print (2^53 + 1, 1.0, 1e400) as its exact text: JSON.stringify writes it back
// as sent. Numbers used in arithmetic (counts, TTLs) are small and stay numbers.
function keepExactNumbers(_key, value, context) {
  if (typeof value !== 'number' || !context || typeof JSON.rawJSON !== 'function') return value;
  return String(value) === context.source ? value : JSON.rawJSON(context.source);
}

export async function api(method, path, body, { exactNumbers = false } = {}) {
  const headers = { Accept: 'application/json' };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  const init = { method, headers, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), TIMEOUT_MS);
  init.signal = ctl.signal;
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new Unreachable(`cannot reach the node at ${location.host} (${e.name === 'AbortError' ? 'no answer within 8 s' : 'connection failed'})`);
  } finally {
    clearTimeout(timer);
  }
  let data = null;
  try {
    const text = await res.text();
    data = exactNumbers ? JSON.parse(text, keepExactNumbers) : JSON.parse(text);
  } catch {
    throw new Unreachable(`the node at ${location.host} sent an incomplete reply`);
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

export async function login(username, password) {
  const r = await api('POST', '/auth/login', { username, password });
  session.token = r.token;
  return r;
}

export function logout() {
  session.token = null; // tokens expire on their own; nothing to tell the node
}
