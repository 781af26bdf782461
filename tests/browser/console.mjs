// Drives the console of a running `leat serve` in headless Chromium
// (Debian's, through playwright-core). tests/tests/console.rs starts the
// server with examples/orders.toml applied and runs this script:
//
//   LEAT_URL=http://127.0.0.1:PORT LEAT_TOKEN=... OUT_DIR=... node console.mjs e2e
//   ... node console.mjs bench        (the responsiveness figures, as JSON)
//
// It fails (exit 1) on the first step that does not hold; screenshots go to OUT_DIR.

import { chromium } from 'playwright-core';
import { mkdirSync, rmSync } from 'node:fs';
import assert from 'node:assert/strict';

const url = process.env.LEAT_URL;
const tok = process.env.LEAT_TOKEN;
const out = process.env.OUT_DIR ?? '.';
const mode = process.argv[2] ?? 'e2e';
assert.ok(url && tok, 'LEAT_URL and LEAT_TOKEN are needed');
mkdirSync(out, { recursive: true });
rmSync(`${out}/failure.png`, { force: true });

const log = (...a) => console.log('console.mjs:', ...a);

async function apiGet(path) {
  const res = await fetch(url + path, { headers: { Authorization: `Bearer ${tok}` } });
  assert.equal(res.status, 200, `GET ${path}: ${res.status}`);
  return res.json();
}

async function produce(events) {
  const res = await fetch(`${url}/v1/streams/orders/events`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${tok}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ events }),
  });
  assert.equal(res.status, 200, `produce: ${res.status} ${await res.text()}`);
}

async function waitFor(what, check, ms = 30000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
// No request may leave for another origin (no CDN, no external network).
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const outside = [];
context.on('request', (r) => { if (!r.url().startsWith(url) && !r.url().startsWith('data:')) outside.push(r.url()); });
const page = await context.newPage();
const errors = [];
page.on('pageerror', (e) => { errors.push(e.message); log('error in the page:', e.message); });
page.on('console', (m) => { if (m.type() === 'error') log('console error in the page:', m.text()); });
page.setDefaultTimeout(30000);

/** No DOM node printed as text (an array handed to replaceChildren shows `[object HTML...]`). */
async function noObjectText(where) {
  const text = await page.innerText('body');
  assert.ok(!text.includes('[object '), `${where} shows an object as text:\n${text}`);
}

async function login(token) {
  await page.goto(`${url}/`);
  await page.fill('#token', token);
  await page.click('#login-form button[type=submit]');
}

try {
  try {
    if (mode === 'bench') await bench();
    else await e2e();
  } catch (e) {
    // What the page showed when the step failed.
    await page.screenshot({ path: `${out}/failure.png`, fullPage: true }).catch(() => {});
    log(`failed at ${page.url()}; the page's text:\n${await page.innerText('body').catch(() => '?')}`);
    throw e;
  }
  assert.deepEqual(outside, [], 'requests to other origins');
  assert.deepEqual(errors, [], 'errors in the page');
  log('ok');
} finally {
  await browser.close();
}

async function e2e() {
  // A wrong token sees nothing but the login form.
  await login('not-the-token');
  await page.waitForSelector('#login-error:has-text("Wrong token")');
  assert.equal(await page.isVisible('#nav'), false);
  assert.equal((await page.textContent('#main')).trim(), '');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('leat.token')), null);
  await page.screenshot({ path: `${out}/login-refused.png` });
  log('a wrong token sees only the login form');

  // Events keep flowing while the test looks.
  let n = 0;
  const flow = setInterval(() => {
    n += 1;
    produce([{ key: `live-${n % 7}`, value: JSON.stringify({ type: 'created', customer: { country: n % 2 ? 'FR' : 'DE' }, total: n }) }])
      .catch((e) => log('produce failed', e.message));
  }, 150);
  try {
    await login(tok);
    await page.waitForSelector('[data-node="processor:router"]');
    for (const node of ['processor:french-orders', 'processor:paid-table', 'stream:orders', 'stream:paid-orders']) {
      await page.waitForSelector(`[data-node="${node}"]`);
    }
    // Live rates: the edge orders -> router shows a rate above zero.
    await page.waitForSelector('[data-edge="orders->router"].active', { timeout: 30000 });
    const label = await page.textContent('[data-edge="orders->router"] text');
    assert.match(label, /^[0-9.,]+\/s$/);
    log(`graph with live rates: orders -> router ${label}`);
    // The demo's o-4 (`refunded`) failed in the router: its last error shows on its node.
    const error = await page.textContent('[data-node="processor:router"] text.err');
    assert.ok(error.length > 0, 'the router shows no last error');
    log(`router's last error on the graph: ${error}`);
    await page.screenshot({ path: `${out}/graph.png` });

    // A processor: pause, then resume, each confirmed, each seen by the API.
    await page.click('[data-node="processor:router"]');
    await page.waitForSelector('h1:has-text("router")');
    await page.waitForSelector('#positions tbody tr');
    await page.waitForSelector('#last-error');
    for (const [button, state] of [['#pause', 'paused'], ['#resume', 'running']]) {
      await page.click(button);
      await page.waitForSelector('dialog#confirm[open]');
      await page.click('#confirm-ok');
      await page.waitForSelector(`#action-message:has-text("${state === 'paused' ? 'paused' : 'resumed'}")`);
      await waitFor(`router ${state} in the API`, async () => (await apiGet('/v1/processors/router')).state === state);
      await page.waitForSelector(`h1 .badge[data-state="${state}"]`);
      log(`router ${state}, in the page and in the API`);
    }
    // A cancelled confirmation does nothing.
    await page.click('#pause');
    await page.click('dialog#confirm button[value=cancel]');
    await new Promise((r) => setTimeout(r, 500));
    assert.equal((await apiGet('/v1/processors/router')).state, 'running');
    await noObjectText('the processor page');
    await page.screenshot({ path: `${out}/processor.png`, fullPage: true });

    // Interactive query of paid-table's committed state.
    await page.goto(`${url}/#/processor/paid-table`);
    await page.fill('#state-text', 'o-1');
    await page.click('#state-form button');
    await page.waitForSelector('#state-result td:has-text("o-1")');
    await noObjectText('the state query');
    log('paid-table state by key');

    // A stream: the tail, then an output's leat.source link to its input event.
    await page.goto(`${url}/#/`);
    await page.click('[data-node="stream:orders-fr"]');
    await page.waitForSelector('#tail a.source');
    const link = page.locator('#tail a.source').first();
    const source = await link.textContent();
    const [stream, partition, offset] = source.split('/');
    await link.click();
    await page.waitForSelector(`#focus tr.event-focus[data-event="${partition}:${offset}"]`);
    assert.ok(page.url().includes(`#/stream/${stream}?p=${partition}&o=${offset}`), page.url());
    const input = (await apiGet(`/v1/streams/${stream}/events?partition=${partition}&from=${offset}&max=1`)).events[0];
    const shownKey = await page.textContent('#focus tr.event-focus td:nth-child(3)');
    assert.equal(shownKey, input.key);
    log(`followed leat.source ${source} to its input event (key ${input.key})`);
    await noObjectText('the stream page');
    await page.screenshot({ path: `${out}/stream.png`, fullPage: true });

    // Search by key.
    await page.fill('#search-key', 'o-3');
    await page.click('#search-form button');
    await page.waitForSelector('#search-result tr[data-event]');
    await noObjectText('the search');
    log('search by key');
  } finally {
    clearInterval(flow);
  }
}

async function bench() {
  const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const t0 = Date.now();
  await login(tok);
  await page.waitForSelector('#graph svg [data-node^="processor:"]');
  const firstGraphMs = Date.now() - t0;
  const nodes = await page.locator('#graph [data-node]').count();
  const cycles = [], renders = [], fetches = [];
  let seen = await page.evaluate(() => window.leatConsole.timings.polls);
  for (let i = 0; i < 6; i++) {
    await page.waitForFunction((n) => window.leatConsole.timings.polls > n, seen, { timeout: 60000 });
    const t = await page.evaluate(() => ({ ...window.leatConsole.timings }));
    seen = t.polls;
    cycles.push(t.cycle); renders.push(t.render); fetches.push(t.fetch);
  }
  // Input latency while polling: a click on a processor until its page shows.
  const t1 = Date.now();
  await page.locator('#graph [data-node^="processor:"]').first().click();
  await page.waitForSelector('#positions tbody tr');
  const openProcessorMs = Date.now() - t1;
  await page.screenshot({ path: `${out}/bench-processor.png` });
  const figures = {
    nodes, firstGraphMs, openProcessorMs,
    pollCycleMedianMs: Math.round(median(cycles)), pollCycleMaxMs: Math.round(Math.max(...cycles)),
    fetchMedianMs: Math.round(median(fetches)), graphRenderMedianMs: Math.round(median(renders)),
  };
  console.log(`BENCH ${JSON.stringify(figures)}`);
}
