// The console: a login form, then pages chosen by the URL's hash
// (#/topology/NAME, #/processor/NAME, #/stream/NAME?p=P&o=O), refreshed by
// polling the JSON API every POLL_MS.

import { api, token, ApiError } from './api.js';
import { topologyPage, processorPage, streamPage, Rates } from './pages.js';

const POLL_MS = 2000;
const $ = (id) => document.getElementById(id);

const ctx = {
  rates: new Rates(),
  topologies: [],
  page: null,
  timer: null,
  // What the last poll cost, in ms (read by the browser tests).
  timings: { fetch: 0, render: 0, cycle: 0, polls: 0 },
  pollNow: () => poll(),
};
window.leatConsole = ctx;

function showLogin(message) {
  clearTimeout(ctx.timer);
  ctx.page = null;
  $('main').replaceChildren();
  $('nav').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message ?? '';
  $('token').focus();
}

async function login(t) {
  token.set(t);
  try {
    ctx.topologies = await api('/v1/topologies');
  } catch (e) {
    token.clear();
    showLogin(e instanceof ApiError && e.status === 401 ? 'Wrong token.' : e.message);
    return;
  }
  $('login').hidden = true;
  $('nav').hidden = false;
  const select = $('topology-select');
  select.replaceChildren(...[...ctx.topologies, ''].map((name) => {
    const o = document.createElement('option');
    o.value = name;
    o.textContent = name || '(everything)';
    return o;
  }));
  route();
}

function selectedTopology() {
  const v = $('topology-select').value;
  return v === '' ? null : v;
}

/** Mounts the page the hash names, then polls. */
function route() {
  if (!token.get()) return showLogin();
  const [path, query] = location.hash.replace(/^#/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query ?? '');
  if (parts[0] === 'topology' && parts[1] !== undefined) $('topology-select').value = parts[1];
  ctx.page = parts[0] === 'processor' && parts[1] ? processorPage(ctx, parts[1])
    : parts[0] === 'stream' && parts[1] ? streamPage(ctx, parts[1], params)
      : topologyPage(ctx);
  $('main').replaceChildren(ctx.page.root);
  poll();
}

async function poll() {
  clearTimeout(ctx.timer);
  const page = ctx.page;
  if (!page) return;
  const t0 = performance.now();
  try {
    const [processors, streams] = await Promise.all([api('/v1/processors'), api('/v1/streams')]);
    const t1 = performance.now();
    ctx.rates.sample(processors, streams, Date.now());
    if (page !== ctx.page) return;
    await page.refresh({ processors, streams, rates: ctx.rates, topology: selectedTopology() });
    const t2 = performance.now();
    Object.assign(ctx.timings, { fetch: t1 - t0, cycle: t2 - t0, polls: ctx.timings.polls + 1 });
    $('poll-status').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) {
      token.clear();
      return showLogin('The server refused the token.');
    }
    $('poll-status').textContent = `update failed: ${e.message}`;
  }
  if (page === ctx.page) ctx.timer = setTimeout(poll, POLL_MS);
}

$('login-form').addEventListener('submit', (e) => {
  e.preventDefault();
  login($('token').value);
});
$('logout').addEventListener('click', () => { token.clear(); showLogin(); });
$('topology-select').addEventListener('change', () => {
  location.hash = `#/topology/${encodeURIComponent($('topology-select').value)}`;
});
window.addEventListener('hashchange', route);

if (token.get()) login(token.get());
else showLogin();
