// Building DOM and SVG nodes without HTML strings: text is always text.

const SVG = 'http://www.w3.org/2000/svg';

function build(node, attrs, children) {
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

/** An HTML element: h('a', {href: '#/'}, 'text', child...). */
export const h = (tag, attrs, ...children) => build(document.createElement(tag), attrs, children);

/** An SVG element. */
export const s = (tag, attrs, ...children) => build(document.createElementNS(SVG, tag), attrs, children);

/** A number with thousands separators. */
export const num = (n) => (n ?? 0).toLocaleString('en-US');

/** A rate: events per second, one decimal under 10. */
export const rate = (r) => (r >= 10 ? Math.round(r).toLocaleString('en-US') : (r ?? 0).toFixed(1));

/** The state a processor is shown in: failed, stopped (a partition stopped on an event), paused, running. */
export const shownState = (p) =>
  p.state === 'failed' ? 'failed' : p.stopped?.length ? 'stopped' : p.state;

/** The link to a stream, or to one of its events. */
export const streamHref = (name, partition, offset) =>
  partition === undefined ? `#/stream/${encodeURIComponent(name)}`
    : `#/stream/${encodeURIComponent(name)}?p=${partition}&o=${offset}`;

export const processorHref = (name) => `#/processor/${encodeURIComponent(name)}`;
