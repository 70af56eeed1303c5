// DOM and formatting helpers. Rocket data only ever reaches the page as text
// nodes or attribute values set one by one: nothing here parses HTML (and the
// page's Content-Security-Policy enforces Trusted Types, so nothing can).

const SVG_NS = 'http://www.w3.org/2000/svg';

function build(element, attrs, children) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') element.setAttribute('class', value);
    else if (name === 'text') element.textContent = String(value);
    else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

/** An HTML element; string children become text nodes. */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element; string children become text nodes. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

/** Sets an element's text (a no-op when unchanged, so no needless layout). */
export function setText(element, text) {
  const value = String(text);
  if (element.textContent !== value) element.textContent = value;
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

/** A whole number with the reader's grouping (1,234). */
export function num(value) {
  return value === null || value === undefined ? '–' : integer.format(value);
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  year: 'numeric', month: 'short', day: 'numeric',
  hour: '2-digit', minute: '2-digit', second: '2-digit',
});
const timeOnly = new Intl.DateTimeFormat(undefined, { hour: '2-digit', minute: '2-digit', second: '2-digit' });

/** A timestamp in the reader's time zone, or a dash. */
export function when(iso) {
  if (!iso) return '–';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : dateTime.format(date);
}

/** A time of day in the reader's time zone. */
export function clock(value) {
  return timeOnly.format(new Date(value));
}

/** A `<time>` element for an ISO timestamp. */
export function timeElement(iso) {
  return h('time', { datetime: iso || null }, when(iso));
}

export const STATUS_LABELS = {
  launched: 'In flight',
  exploded: 'Exploded',
  unknown: 'Awaiting launch',
};

/** The status as a badge: words and a class, so colour is never the only cue. */
export function statusBadge(rocket) {
  const status = STATUS_LABELS[rocket.status] ? rocket.status : 'unknown';
  return h('span', { class: `badge badge-${status}`, 'data-status': status }, STATUS_LABELS[status]);
}

/** A channel shortened for narrow places (the full one goes in a title). */
export function shortChannel(channel) {
  return String(channel).slice(0, 8);
}
