// The request series of the whole cluster, kept in the page: GET /cluster/stats with
// ?since= the last second already held, so each poll brings only the new seconds.

import { api } from './api.js';

const KEEP = 300; // seconds shown and kept: 5 minutes

export const stats = {
  t: [],            // unix seconds
  commands: new Map(), // command → {ops, errors, p50, p99}: arrays aligned with t
  nodes: new Map(),    // member → ops array aligned with t
  nodeErrors: new Map(), // member → why its samples are missing
};

function pad(arr, n) {
  while (arr.length < n) arr.unshift(0);
  return arr;
}

export async function pollStats() {
  const last = stats.t.length ? stats.t[stats.t.length - 1] : null;
  const r = await api('GET', last === null ? '/cluster/stats' : `/cluster/stats?since=${last}`);
  if (r.t.length === 0) return;
  const before = stats.t.length;
  stats.t.push(...r.t);
  const seen = new Set();
  for (const c of r.commands) {
    seen.add(c.command);
    let s = stats.commands.get(c.command);
    if (!s) {
      s = { ops: pad([], before), errors: pad([], before), p50: new Array(before).fill(null), p99: new Array(before).fill(null) };
      stats.commands.set(c.command, s);
    }
    s.ops.push(...c.ops);
    s.errors.push(...c.errors);
    s.p50.push(...c.p50_ms);
    s.p99.push(...c.p99_ms);
  }
  for (const [name, s] of stats.commands) {
    if (seen.has(name)) continue;
    for (let i = 0; i < r.t.length; i++) { s.ops.push(0); s.errors.push(0); s.p50.push(null); s.p99.push(null); }
  }
  stats.nodeErrors.clear();
  const seenNodes = new Set();
  for (const n of r.nodes) {
    seenNodes.add(n.name);
    if (!stats.nodes.has(n.name)) stats.nodes.set(n.name, pad([], before));
    stats.nodes.get(n.name).push(...n.ops);
    if (n.error) stats.nodeErrors.set(n.name, n.error);
  }
  for (const [name, ops] of stats.nodes) {
    if (!seenNodes.has(name)) ops.push(...new Array(r.t.length).fill(0));
  }
  trim();
}

function trim() {
  const drop = stats.t.length - KEEP;
  if (drop <= 0) return;
  stats.t.splice(0, drop);
  for (const s of stats.commands.values()) {
    s.ops.splice(0, drop); s.errors.splice(0, drop); s.p50.splice(0, drop); s.p99.splice(0, drop);
  }
  for (const [name, ops] of stats.nodes) {
    ops.splice(0, drop);
    if (ops.every((v) => v === 0)) stats.nodes.delete(name);
  }
  for (const [name, s] of stats.commands) {
    if (s.ops.every((v) => v === 0)) stats.commands.delete(name);
  }
}

// rate is the mean of the last n values of arr (requests per second).
export function rate(arr, n = 5) {
  if (!arr || arr.length === 0) return null;
  const tail = arr.slice(-n);
  return tail.reduce((a, b) => a + b, 0) / tail.length;
}

export function resetStats() {
  stats.t = [];
  stats.commands.clear();
  stats.nodes.clear();
  stats.nodeErrors.clear();
}
