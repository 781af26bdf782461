// The console's pages. Each is mounted once in <main> and refreshed at each
// poll with the latest processors and streams.

import { api, seg } from './api.js';
import { h, s, num, rate, shownState, streamHref, processorHref } from './dom.js';
import * as graph from './graph.js';

/** Rates from the difference of two polls: appends per stream, commits per processor input. */
export class Rates {
  constructor() { this.prev = null; this.cur = null; this.history = new Map(); }

  sample(processors, streams, at) {
    const appended = new Map(streams.map((st) =>
      [st.name, st.partitions.reduce((n, p) => n + p.next_offset, 0)]));
    const consumed = new Map();
    for (const p of processors) {
      for (const pos of p.positions) {
        const k = `${p.name}\n${pos.stream}`;
        consumed.set(k, (consumed.get(k) ?? 0) + pos.committed);
      }
      for (const c of p.call_stats ?? []) consumed.set(`${p.name}\ncall ${c.origin}`, c.calls);
      const series = this.history.get(p.name) ?? [];
      const last = series.at(-1);
      const lat = p.batch_latency;
      const dCount = last ? lat.count - last.count : 0;
      series.push({ at, rate: p.events_per_sec, count: lat.count, sum: lat.sum_seconds,
        latencyMs: dCount > 0 ? ((lat.sum_seconds - last.sum) * 1000) / dCount : 0 });
      if (series.length > 150) series.shift();
      this.history.set(p.name, series);
    }
    this.prev = this.cur;
    this.cur = { at, appended, consumed };
  }

  #delta(kind, key) {
    if (!this.prev || !this.cur) return undefined;
    const dt = (this.cur.at - this.prev.at) / 1000;
    const a = this.prev[kind].get(key), b = this.cur[kind].get(key);
    if (a === undefined || b === undefined || dt <= 0) return undefined;
    return Math.max(0, b - a) / dt;
  }

  append(stream) { return this.#delta('appended', stream); }
  consume(processor, stream) { return this.#delta('consumed', `${processor}\n${stream}`); }
  calls(processor, origin) { return this.#delta('consumed', `${processor}\ncall ${origin}`); }
}

const badge = (p) => h('span', { class: `badge ${shownState(p)}`, 'data-state': shownState(p) }, shownState(p));
const card = (label, value) => h('div', { class: 'card' }, h('span', { class: 'muted' }, label), h('b', {}, value));
const MAX_ROWS = 200;
const capped = (rows) => rows.length > MAX_ROWS
  ? [rows.slice(0, MAX_ROWS), h('p', { class: 'muted' }, `showing ${MAX_ROWS} of ${num(rows.length)}`)]
  : [rows, null];

/** A table, with a note when its rows were capped: one element, for replaceChildren. */
function table(head, rows, attrs = {}) {
  const [shown, note] = capped(rows);
  return h('div', {}, h('table', attrs, h('thead', {}, h('tr', {}, head.map((c) => h('th', {}, c)))),
    h('tbody', {}, shown)), note);
}

/** Asks for confirmation in the page's <dialog>; resolves to true on Confirm. */
function confirm(text) {
  const dialog = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  dialog.returnValue = '';
  dialog.showModal();
  return new Promise((resolve) => dialog.addEventListener('close',
    () => resolve(dialog.returnValue === 'ok'), { once: true }));
}

function sparkline(values, label) {
  const w = 240, hgt = 48, max = Math.max(1e-9, ...values);
  const pts = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * w},${hgt - 2 - (v / max) * (hgt - 4)}`);
  return h('figure', {}, s('svg', { class: 'spark', width: w, height: hgt },
    s('polyline', { points: pts.join(' ') })),
  h('figcaption', { class: 'muted' }, `${label} (max ${rate(max)})`));
}

// ---- the topology graph

export function topologyPage(ctx) {
  const box = h('div', { class: 'graph', id: 'graph' });
  const summary = h('p', { class: 'muted', id: 'graph-summary' });
  const root = h('div', {}, h('h1', {}, 'Topology'), summary, box);
  return {
    root,
    refresh({ processors, streams, rates, topology }) {
      const m = graph.model(processors, streams, topology);
      const t0 = performance.now();
      box.replaceChildren(graph.render(m, rates));
      ctx.timings.render = performance.now() - t0;
      const failing = m.processors.filter((p) => shownState(p) !== 'running' && shownState(p) !== 'paused');
      summary.textContent = `${topology ?? 'every topology'}: ${m.processors.length} processor(s), `
        + `${m.streams.length} stream(s)${failing.length ? `, ${failing.length} failing` : ''}`;
    },
  };
}

// ---- one processor

export function processorPage(ctx, name) {
  const head = h('div');
  const message = h('p', { id: 'action-message', role: 'status' });
  const act = async (what, text, body) => {
    if (!(await confirm(text))) return;
    try {
      const done = await api(`/v1/processors/${seg(name)}/${what}`, { method: 'POST', body: body ?? {} });
      message.className = 'ok';
      message.textContent = done.message;
      ctx.pollNow();
    } catch (e) {
      message.className = 'error';
      message.textContent = e.message;
    }
  };
  const scaleTo = h('input', { type: 'number', min: 1, value: 1, id: 'scale-to', 'aria-label': 'instances' });
  const resetTo = h('input', { value: 'beginning', id: 'reset-to', 'aria-label': 'reset to',
    title: 'beginning, end, an offset or @MILLIS' });
  const actions = h('div', { class: 'actions' },
    h('button', { id: 'pause', onclick: () => act('pause', `Pause ${name}? It stops after its current batch.`) }, 'Pause'),
    h('button', { id: 'resume', onclick: () => act('resume', `Resume ${name}?`) }, 'Resume'),
    scaleTo,
    h('button', { id: 'scale', onclick: () => act('scale', `Scale ${name} to ${scaleTo.value} instance(s)?`,
      { instances: Number(scaleTo.value) }) }, 'Scale'),
    resetTo,
    h('button', { id: 'reset', onclick: () => act('reset',
      `Reset ${name}'s committed offsets to ${resetTo.value}? It will reprocess (or skip) events.`,
      { to: resetTo.value.trim() }) }, 'Reset'));
  const body = h('div');
  const state = stateQuery(name);
  const root = h('div', {}, head, actions, message, body, state);
  let scaleSet = false;
  return {
    root,
    refresh({ processors, rates }) {
      const p = processors.find((x) => x.name === name);
      if (!p) {
        head.replaceChildren(h('h1', {}, name), h('p', { class: 'error' }, 'no such processor'));
        body.replaceChildren();
        return;
      }
      if (!scaleSet) { scaleTo.value = p.instances.length; scaleSet = true; }
      const lat = p.batch_latency;
      head.replaceChildren(h('h1', {}, `⚙ ${p.name} `, badge(p)),
        h('p', { class: 'muted' }, `version ${p.version} · topology ${p.topology ?? '—'} · on error ${p.on_error} · inputs `,
          p.inputs.map((i) => [h('a', { href: streamHref(i) }, i), ' ']), '· outputs ',
          p.outputs.map((o) => [h('a', { href: streamHref(o) }, o), ' '])));
      const history = rates.history.get(name) ?? [];
      const positions = [...p.positions].sort((a, b) => b.lag - a.lag || a.partition - b.partition);
      const stopped = new Map(p.stopped.map((x) => [`${x.stream}/${x.partition}`, x]));
      body.replaceChildren(
        h('div', { class: 'cards' }, card('lag', num(p.lag)), card('events/s', rate(p.events_per_sec)),
          card('events in', num(p.events_in)), card('events out', num(p.events_out)),
          card('batches', num(p.batches)), card('failed calls', num(p.failed_calls)),
          card('traps', num(p.traps)), card('restarts', num(p.restarts)),
          card('batch latency (mean)', lat.count ? `${(lat.sum_seconds * 1000 / lat.count).toFixed(1)} ms` : '—')),
        h('div', { class: 'cards' }, sparkline(history.map((x) => x.rate), 'events/s'),
          sparkline(history.map((x) => x.latencyMs), 'batch latency, ms')),
        h('h2', {}, 'Errors'),
        h('div', { id: 'errors' }, p.last_error || p.stopped.length
          ? [p.last_error ? h('pre', { class: 'error', id: 'last-error' }, p.last_error) : null,
            p.stopped.map((x) => h('p', { class: 'error' }, `partition ${x.stream}/${x.partition} stopped at `,
              h('a', { href: streamHref(x.stream, x.partition, x.offset) }, `offset ${x.offset}`), `: ${x.error}`))]
          : h('p', { class: 'muted' }, 'none')),
        h('h2', {}, 'Instances'),
        table(['instance', 'partitions'], p.instances.map((i) => h('tr', {}, h('td', {}, i.id),
          h('td', {}, i.partitions.length ? i.partitions.join(', ') : 'idle')))),
        h('h2', {}, 'Committed offsets and lag'),
        table(['stream', 'partition', 'committed', 'lag', ''], positions.map((x) => {
          const stop = stopped.get(`${x.stream}/${x.partition}`);
          return h('tr', {}, h('td', {}, h('a', { href: streamHref(x.stream) }, x.stream)),
            h('td', { class: 'num' }, x.partition), h('td', { class: 'num' }, num(x.committed)),
            h('td', { class: 'num' }, num(x.lag)), h('td', { class: 'error' }, stop ? 'stopped' : ''));
        }), { id: 'positions' }),
      );
    },
  };
}

function stateQuery(name) {
  const mode = h('select', { id: 'state-mode', 'aria-label': 'query by' },
    h('option', { value: 'key' }, 'key'), h('option', { value: 'prefix' }, 'prefix'));
  const text = h('input', { id: 'state-text', placeholder: 'key or prefix' });
  const partition = h('input', { id: 'state-partition', type: 'number', min: 0, placeholder: 'partition (all)' });
  const out = h('div', { id: 'state-result' });
  const run = async (e) => {
    e.preventDefault();
    const q = new URLSearchParams({ [mode.value]: text.value });
    if (partition.value !== '') q.set('partition', partition.value);
    try {
      const v = await api(`/v1/processors/${seg(name)}/state?${q}`);
      out.replaceChildren(v.entries.length
        ? table(['partition', 'key', 'value'], v.entries.map((x) => h('tr', {}, h('td', { class: 'num' }, x.partition),
          h('td', {}, x.key), h('td', {}, pretty(x.value)))))
        : h('p', { class: 'muted' }, `nothing committed there (partitions ${v.partitions.join(', ')})`),
      v.truncated ? h('p', { class: 'muted' }, 'more entries match') : null);
    } catch (err) {
      out.replaceChildren(h('p', { class: 'error' }, err.message));
    }
  };
  return h('section', {}, h('h2', {}, 'State (committed)'),
    h('form', { class: 'inline', id: 'state-form', onsubmit: run }, mode, text, partition,
      h('button', { type: 'submit' }, 'Query')), out);
}

// ---- one stream

/** A value, pretty-printed when it is JSON. */
function pretty(value) {
  if (value === null) return h('span', { class: 'muted' }, '<tombstone>');
  try {
    const v = JSON.parse(value);
    if (typeof v === 'object' && v !== null) return h('pre', {}, JSON.stringify(v, null, 2));
  } catch { /* not JSON */ }
  return h('pre', {}, value);
}

/** `stream/partition/offset` (stream names have no `/`). */
function source(value) {
  const m = /^(.+)\/(\d+)\/(\d+)$/.exec(value);
  return m ? h('a', { href: streamHref(m[1], m[2], m[3]), class: 'source' }, value) : value;
}

function header(x) {
  const v = x.key === 'leat.source' ? source(x.value)
    : x.key === 'leat.processor' ? h('a', { href: processorHref(x.value.split('@')[0]) }, x.value) : x.value;
  return h('div', {}, h('span', { class: 'muted' }, `${x.key}=`), v);
}

function eventRows(stream, events, focus) {
  return events.map((e) => h('tr', {
    class: focus && e.partition === focus.p && e.offset === focus.o ? 'event-focus' : null,
    'data-event': `${e.partition}:${e.offset}`,
  }, h('td', {}, h('a', { href: streamHref(stream, e.partition, e.offset) }, `${e.partition}:${e.offset}`)),
  h('td', {}, new Date(e.timestamp).toISOString()), h('td', {}, e.key ?? h('span', { class: 'muted' }, '—')),
  h('td', {}, pretty(e.value)), h('td', {}, e.headers.map(header))));
}

const EVENT_HEAD = ['event', 'time', 'key', 'value', 'headers'];
const TAIL = 30;

export function streamPage(ctx, name, params) {
  const focus = params.has('o') ? { p: Number(params.get('p')), o: Number(params.get('o')) } : null;
  const head = h('div');
  const focused = h('section', { id: 'focus' });
  const partitions = h('div');
  const tail = h('div', { id: 'tail' });
  const found = h('div', { id: 'search-result' });
  const key = h('input', { id: 'search-key', placeholder: 'key' });
  const schema = h('div', { id: 'schema' });
  const search = async (e) => {
    e.preventDefault();
    try {
      const v = await api(`/v1/streams/${seg(name)}/search?${new URLSearchParams({ key: key.value })}`);
      found.replaceChildren(h('p', { class: 'muted' },
        `${v.events.length} event(s) in partition ${v.partition} (searched from offset ${num(v.scanned_from)})`),
      table(EVENT_HEAD, eventRows(name, v.events, focus)));
    } catch (err) { found.replaceChildren(h('p', { class: 'error' }, err.message)); }
  };
  const root = h('div', {}, head, focused, h('h2', {}, 'Partitions'), partitions,
    h('h2', {}, 'Search by key'), h('form', { class: 'inline', id: 'search-form', onsubmit: search }, key,
      h('button', { type: 'submit' }, 'Search')), found,
    h('h2', {}, 'Latest events'), tail, h('h2', {}, 'Schema'), schema);
  api(`/v1/streams/${seg(name)}/schema`).then((v) => schema.replaceChildren(
    h('p', { class: 'muted' }, `version ${v.version} · ${v.format ?? ''} · id ${v.id ?? ''}`),
    h('pre', {}, (() => { try { return JSON.stringify(JSON.parse(v.schema), null, 2); } catch { return v.schema; } })())),
  (err) => schema.replaceChildren(h('p', { class: 'muted' }, err.status === 404 ? 'no schema' : err.message)));
  if (focus) {
    api(`/v1/streams/${seg(name)}/events?partition=${focus.p}&from=${focus.o}&max=1`).then((v) => {
      const e = v.events.filter((x) => x.offset === focus.o);
      focused.replaceChildren(h('h2', {}, `Event ${focus.p}:${focus.o}`), e.length
        ? table(EVENT_HEAD, eventRows(name, e, focus)) : h('p', { class: 'error' }, 'not in the log (removed by retention or compaction?)'));
    }, (err) => focused.replaceChildren(h('p', { class: 'error' }, err.message)));
  }
  return {
    root,
    async refresh({ streams, processors }) {
      const st = streams.find((x) => x.name === name);
      if (!st) { head.replaceChildren(h('h1', {}, name), h('p', { class: 'error' }, 'no such stream')); return; }
      const readers = processors.filter((p) => p.inputs.includes(name)).map((p) => p.name);
      head.replaceChildren(h('h1', {}, name), h('p', { class: 'muted' }, `cleanup ${st.cleanup?.policy ?? JSON.stringify(st.cleanup)} · writer `,
        st.writer ? h('a', { href: processorHref(st.writer) }, st.writer) : '—', ' · read by ',
        readers.length ? readers.map((r) => [h('a', { href: processorHref(r) }, r), ' ']) : '—'));
      partitions.replaceChildren(table(['partition', 'log start', 'next offset', 'events'],
        st.partitions.map((x, i) => h('tr', {}, h('td', { class: 'num' }, i), h('td', { class: 'num' }, num(x.log_start)),
          h('td', { class: 'num' }, num(x.next_offset)), h('td', { class: 'num' }, num(x.next_offset - x.log_start))))));
      // The latest events of the 8 partitions written last.
      const busiest = st.partitions.map((x, i) => ({ ...x, i })).filter((x) => x.next_offset > x.log_start)
        .sort((a, b) => b.next_offset - a.next_offset).slice(0, 8);
      const reads = await Promise.all(busiest.map((x) => api(`/v1/streams/${seg(name)}/events?partition=${x.i}`
        + `&from=${Math.max(x.log_start, x.next_offset - TAIL)}&max=${TAIL}`)));
      const events = reads.flatMap((r) => r.events).sort((a, b) => b.timestamp - a.timestamp
        || b.offset - a.offset).slice(0, TAIL);
      tail.replaceChildren(events.length ? table(EVENT_HEAD, eventRows(name, events, focus))
        : h('p', { class: 'muted' }, 'no events'));
    },
  };
}
