// A topology as a graph: streams and processors laid out in columns (a
// stream right of its writer, a processor right of its inputs), edges
// labelled with their events/s, processors with their state, lag and error.

import { s, num, rate, shownState, streamHref, processorHref } from './dom.js';

const W = 190, H = 58, GAP_X = 80, GAP_Y = 22, PAD = 20;

/** The streams and processors of `topology` (null: all of them). */
export function model(processors, streams, topology) {
  const procs = processors.filter((p) => topology === null || p.topology === topology);
  const names = new Set(procs.flatMap((p) => [...p.inputs, ...p.outputs]));
  if (topology === null) streams.forEach((st) => names.add(st.name));
  const byName = new Map(streams.map((st) => [st.name, st]));
  const shown = [...names].sort().map((n) => byName.get(n) ?? { name: n, partitions: [], missing: true });
  const services = [...new Set(procs.flatMap((p) => p.calls ?? []))].sort();
  return { processors: procs, streams: shown, services };
}

/** Columns: a stream one right of its writer (0 without), a processor one right of its inputs. */
function columns(m) {
  const col = new Map();
  const writer = new Map();
  m.processors.forEach((p) => p.outputs.forEach((o) => writer.set(o, p.name)));
  m.streams.forEach((st) => col.set(`s:${st.name}`, 0));
  m.processors.forEach((p) => col.set(`p:${p.name}`, 1));
  // Longest path, bounded: a cycle stops growing after as many rounds as nodes.
  for (let round = 0, changed = true; changed && round <= col.size; round++) {
    changed = false;
    for (const p of m.processors) {
      const c = 1 + Math.max(0, ...p.inputs.map((i) => col.get(`s:${i}`) ?? 0));
      if (c !== col.get(`p:${p.name}`)) { col.set(`p:${p.name}`, c); changed = true; }
    }
    for (const st of m.streams) {
      const w = writer.get(st.name);
      const c = w === undefined ? 0 : col.get(`p:${w}`) + 1;
      if (c !== col.get(`s:${st.name}`)) { col.set(`s:${st.name}`, c); changed = true; }
    }
  }
  // An external service right of its rightmost caller.
  for (const svc of m.services) {
    const callers = m.processors.filter((p) => p.calls?.includes(svc));
    col.set(`c:${svc}`, 1 + Math.max(0, ...callers.map((p) => col.get(`p:${p.name}`))));
  }
  return col;
}

/** Positions of every node: `{x, y}` by id (`s:NAME`, `p:NAME`, `c:ORIGIN`). */
export function layout(m) {
  const col = columns(m);
  const stacks = [];
  for (const [id, c] of col) (stacks[c] ??= []).push(id);
  const pos = new Map();
  stacks.forEach((ids, c) => ids?.forEach((id, row) =>
    pos.set(id, { x: PAD + c * (W + GAP_X), y: PAD + row * (H + GAP_Y) })));
  const width = PAD * 2 + stacks.length * (W + GAP_X) - GAP_X;
  const height = PAD * 2 + Math.max(1, ...stacks.map((ids) => ids?.length ?? 0)) * (H + GAP_Y);
  return { pos, width, height };
}

const cut = (text, n) => (text.length > n ? `${text.slice(0, n - 1)}…` : text);

function edge(from, to, label, testid, unit = '') {
  const x1 = from.x + W, y1 = from.y + H / 2, x2 = to.x, y2 = to.y + H / 2;
  const mx = (x1 + x2) / 2;
  return s('g', { class: `edge${label > 0 ? ' active' : ''}`, 'data-edge': testid },
    s('path', { d: `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2 - 6},${y2}`, 'marker-end': 'url(#arrow)' }),
    s('text', { x: mx, y: (y1 + y2) / 2 - 4, 'text-anchor': 'middle', class: 'rate' },
      label === undefined ? '' : `${rate(label)}${unit && ` ${unit}`}/s`));
}

/**
 * The graph as an SVG element. `rates.append(stream)` is a stream's
 * events/s, `rates.consume(processor, stream)` a processor's on one input.
 */
export function render(m, rates) {
  const { pos, width, height } = layout(m);
  const svg = s('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img',
    'aria-label': 'topology graph' },
  s('defs', {}, s('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 5, refY: 5,
    markerWidth: 6, markerHeight: 6, orient: 'auto-start-reverse' },
  s('path', { d: 'M 0 0 L 10 5 L 0 10 z', fill: '#9aa3b5' }))));
  const edges = s('g', {});
  const nodes = s('g', {});
  svg.append(edges, nodes);
  for (const p of m.processors) {
    const at = pos.get(`p:${p.name}`);
    for (const i of p.inputs) {
      const from = pos.get(`s:${i}`);
      if (from) edges.append(edge(from, at, rates.consume(p.name, i), `${i}->${p.name}`));
    }
    for (const o of p.outputs) {
      const to = pos.get(`s:${o}`);
      if (to) edges.append(edge(at, to, rates.append(o), `${p.name}->${o}`));
    }
    for (const c of p.calls ?? []) {
      const to = pos.get(`c:${c}`);
      if (to) edges.append(edge(at, to, rates.calls(p.name, c), `${p.name}->${c}`, 'calls'));
    }
    const state = shownState(p);
    const err = p.last_error ?? p.stopped?.[0]?.error;
    nodes.append(s('a', { href: processorHref(p.name) },
      s('g', { class: `node processor ${state}`, 'data-node': `processor:${p.name}`,
        transform: `translate(${at.x},${at.y})` },
      s('title', {}, err ? `${p.name}: ${err}` : p.name),
      s('rect', { width: W, height: H, rx: 8 }),
      s('text', { x: 10, y: 18, class: 'name' }, cut(`⚙ ${p.name}`, 26)),
      s('text', { x: 10, y: 34, class: 'stat' }, `${state} · lag ${num(p.lag)}`),
      err ? s('text', { x: 10, y: 50, class: 'err' }, cut(err, 27))
        : s('text', { x: 10, y: 50, class: 'muted' }, `${p.instances.length} instance(s)`))));
  }
  for (const st of m.streams) {
    const at = pos.get(`s:${st.name}`);
    const events = st.partitions.reduce((n, x) => n + x.next_offset, 0);
    nodes.append(s('a', { href: streamHref(st.name) },
      s('g', { class: 'node stream', 'data-node': `stream:${st.name}`,
        transform: `translate(${at.x},${at.y})` },
      s('title', {}, st.name),
      s('rect', { width: W, height: H, rx: 2 }),
      s('text', { x: 10, y: 18, class: 'name' }, cut(st.name, 28)),
      s('text', { x: 10, y: 34 }, st.missing ? 'not created'
        : `${num(events)} events · ${st.partitions.length} part.`),
      s('text', { x: 10, y: 50, class: 'rate' }, `${rate(rates.append(st.name) ?? 0)} events/s in`))));
  }
  for (const svc of m.services) {
    const at = pos.get(`c:${svc}`);
    nodes.append(s('g', { class: 'node service', 'data-node': `service:${svc}`,
      transform: `translate(${at.x},${at.y})` },
    s('title', {}, svc),
    s('rect', { width: W, height: H, rx: 20 }),
    s('text', { x: 14, y: 22, class: 'name' }, '⇄ external service'),
    s('text', { x: 14, y: 40 }, cut(svc, 28))));
  }
  return svg;
}
