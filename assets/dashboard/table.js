// The rocket table: filters, sorting, live rows.
//
// Every rocket the page knows is filtered and sorted here, in the browser, so a
// live change moves a row to its place at once. The filters and the sort live in
// the address (`/dashboard?status=exploded&sort=speed&order=desc`), so a view
// can be bookmarked or shared.

import { h, setText, num, timeElement, statusBadge, STATUS_LABELS } from './dom.js';

/** Rows drawn at first, and added by each "Show more". */
const ROWS_STEP = 200;

const COLUMNS = {
  channel: { label: 'Channel', kind: 'text' },
  status: { label: 'Status', kind: 'status' },
  type: { label: 'Type', kind: 'text' },
  mission: { label: 'Mission', kind: 'text' },
  speed: { label: 'Speed', kind: 'number' },
  messagesReceived: { label: 'Messages', kind: 'number' },
  missingMessages: { label: 'Missing', kind: 'number' },
  lastMessageTime: { label: 'Last message', kind: 'time' },
};

const STATUS_ORDER = { exploded: 0, launched: 1, unknown: 2 };

function sortValue(rocket, key) {
  const value = rocket[key];
  if (value === null || value === undefined || value === '') return null;
  if (key === 'status') return STATUS_ORDER[value] ?? 3;
  if (COLUMNS[key].kind === 'time') return Date.parse(value);
  if (COLUMNS[key].kind === 'number') return Number(value);
  return String(value).toLocaleLowerCase();
}

function readState() {
  const query = new URLSearchParams(window.location.search);
  const sort = COLUMNS[query.get('sort')] ? query.get('sort') : 'channel';
  return {
    q: query.get('q') || '',
    status: STATUS_LABELS[query.get('status')] ? query.get('status') : '',
    type: query.get('type') || '',
    mission: query.get('mission') || '',
    sort,
    order: query.get('order') === 'desc' ? 'desc' : 'asc',
  };
}

export function createListView(store) {
  const section = document.getElementById('list-view');
  const tbody = document.getElementById('rocket-rows');
  const form = document.getElementById('filters');
  const search = document.getElementById('filter-search');
  const statusSelect = document.getElementById('filter-status');
  const typeSelect = document.getElementById('filter-type');
  const missionSelect = document.getElementById('filter-mission');
  const sortSelect = document.getElementById('sort-by');
  const summary = document.getElementById('list-summary');
  const empty = document.getElementById('list-empty');
  const more = document.getElementById('show-more');
  const announcements = document.getElementById('announcements');
  const headers = Array.from(section.querySelectorAll('th[data-sort]'));

  let state = readState();
  let shown = ROWS_STEP;
  let visible = false;
  const rows = new Map();
  const optionKeys = { type: '', mission: '' };

  /** The address of the table as it is shown. */
  function url() {
    const query = new URLSearchParams();
    for (const key of ['q', 'status', 'type', 'mission']) if (state[key]) query.set(key, state[key]);
    if (state.sort !== 'channel' || state.order !== 'asc') {
      query.set('sort', state.sort);
      query.set('order', state.order);
    }
    const text = query.toString();
    return `/dashboard${text ? `?${text}` : ''}`;
  }

  function writeState() {
    if (!visible) return;
    const address = url();
    if (address !== window.location.pathname + window.location.search) {
      window.history.replaceState(window.history.state, '', address);
    }
  }

  function fillControls() {
    search.value = state.q;
    statusSelect.value = state.status;
    setOptions(typeSelect, 'type', 'Any type');
    setOptions(missionSelect, 'mission', 'Any mission');
    sortSelect.value = `${state.sort}:${state.order}`;
    for (const th of headers) {
      const key = th.dataset.sort;
      if (key === state.sort) th.setAttribute('aria-sort', state.order === 'asc' ? 'ascending' : 'descending');
      else th.removeAttribute('aria-sort');
    }
  }

  /** The choices of a select: every value seen, and the chosen one even if gone. */
  function setOptions(select, field, anyLabel) {
    const values = new Set();
    for (const rocket of store.rockets.values()) if (rocket[field]) values.add(rocket[field]);
    if (state[field]) values.add(state[field]);
    const sorted = Array.from(values).sort((a, b) => a.localeCompare(b));
    const key = sorted.join('\u0000');
    if (key !== optionKeys[field]) {
      optionKeys[field] = key;
      select.replaceChildren(
        h('option', { value: '' }, anyLabel),
        ...sorted.map((value) => h('option', { value }, value)),
      );
    }
    select.value = state[field];
  }

  function matches(rocket) {
    if (state.status && rocket.status !== state.status) return false;
    if (state.type && rocket.type !== state.type) return false;
    if (state.mission && rocket.mission !== state.mission) return false;
    if (state.q) {
      const needle = state.q.trim().toLowerCase();
      if (needle && !rocket.channel.toLowerCase().includes(needle)) return false;
    }
    return true;
  }

  function compare(a, b) {
    const x = sortValue(a, state.sort);
    const y = sortValue(b, state.sort);
    let order = 0;
    if (x === null && y !== null) return 1; // blanks last, whatever the order
    if (y === null && x !== null) return -1;
    if (x !== null && y !== null) order = x < y ? -1 : x > y ? 1 : 0;
    if (state.order === 'desc') order = -order;
    return order || (a.channel < b.channel ? -1 : a.channel > b.channel ? 1 : 0);
  }

  function cell(label, className) {
    return h('td', { 'data-label': label, class: className || null });
  }

  function createRow(channel) {
    const link = h('a', { href: `/dashboard/rockets/${encodeURIComponent(channel)}`, 'data-route': true, class: 'mono' }, channel);
    const row = {
      tr: h('tr'),
      link,
      status: cell('Status'),
      type: cell('Type'),
      mission: cell('Mission'),
      speed: cell('Speed', 'num'),
      messages: cell('Messages', 'num'),
      missing: cell('Missing', 'num'),
      last: cell('Last message'),
      data: null,
    };
    row.tr.append(
      h('th', { scope: 'row', 'data-label': 'Channel' }, link),
      row.status, row.type, row.mission, row.speed, row.messages, row.missing, row.last,
    );
    row.tr.dataset.channel = channel;
    return row;
  }

  function fillRow(row, rocket) {
    const previous = row.data;
    row.data = rocket;
    row.tr.dataset.status = rocket.status;
    row.tr.classList.toggle('is-exploded', rocket.status === 'exploded');
    const badge = statusBadge(rocket);
    // One element per cell, so narrow screens can set it beside its label.
    row.status.replaceChildren(h('span', { class: 'cell-value' }, badge,
      rocket.status === 'exploded' && rocket.explosionReason
        ? h('span', { class: 'reason' }, rocket.explosionReason) : null));
    setText(row.type, rocket.type || '–');
    setText(row.mission, rocket.mission || '–');
    setText(row.speed, num(rocket.speed));
    setText(row.messages, num(rocket.messagesReceived));
    setText(row.missing, num(rocket.missingMessages));
    row.missing.classList.toggle('warn', rocket.missingMessages > 0);
    row.last.replaceChildren(h('span', { class: 'cell-value' },
      h('span', { class: 'muted' }, `#${rocket.lastMessageNumber} · `),
      timeElement(rocket.lastMessageTime)));
    return Boolean(previous);
  }

  /** Restarts the highlight of changed rows, with one style pass for them all. */
  function flash(trs) {
    if (!trs.length) return;
    for (const tr of trs) tr.classList.remove('updated');
    void tbody.offsetWidth;
    for (const tr of trs) tr.classList.add('updated');
  }
  tbody.addEventListener('animationend', (event) => {
    const row = event.target.closest('tr');
    if (row) row.classList.remove('updated');
  });

  function render() {
    fillControls();
    const all = store.all();
    const list = all.filter(matches).sort(compare);
    const page = list.slice(0, shown);
    const changed = [];
    const wanted = page.map((rocket) => {
      let row = rows.get(rocket.channel);
      if (!row) {
        row = createRow(rocket.channel);
        rows.set(rocket.channel, row);
      }
      if (row.data !== rocket && fillRow(row, rocket)) changed.push(row.tr);
      return row.tr;
    });
    const current = tbody.children;
    const same = current.length === wanted.length && wanted.every((tr, i) => current[i] === tr);
    if (!same) {
      // Moving a row takes the focus off a link in it: give it back.
      const focused = tbody.contains(document.activeElement) ? document.activeElement : null;
      tbody.replaceChildren(...wanted);
      if (focused && focused.isConnected && document.activeElement !== focused) focused.focus({ preventScroll: true });
    }
    flash(changed);

    renderStats(all);
    const filtered = state.q || state.status || state.type || state.mission;
    const column = COLUMNS[state.sort].label;
    const order = state.order === 'asc' ? 'ascending' : 'descending';
    let text;
    if (!store.loaded && all.length === 0) text = 'Loading rockets…';
    else if (filtered) text = `Showing ${list.length} of ${all.length} rockets, sorted by ${column}, ${order}.`;
    else text = `${all.length} ${all.length === 1 ? 'rocket' : 'rockets'}, sorted by ${column}, ${order}.`;
    if (store.truncated) text += ` Only the first ${all.length} rockets were loaded.`;
    setText(summary, text);

    empty.hidden = list.length > 0 || !store.loaded;
    setText(empty, all.length === 0
      ? 'No rockets yet. A rocket appears here as soon as its first message arrives.'
      : 'No rocket matches these filters.');
    more.hidden = list.length <= page.length;
    setText(more, `Show more rockets (${page.length} of ${list.length} shown)`);
  }

  function renderStats(all) {
    let launched = 0; let exploded = 0; let unknown = 0; let messages = 0; let missing = 0;
    for (const rocket of all) {
      if (rocket.status === 'launched') launched += 1;
      else if (rocket.status === 'exploded') exploded += 1;
      else unknown += 1;
      messages += rocket.messagesReceived || 0;
      missing += rocket.missingMessages || 0;
    }
    setText(document.getElementById('stat-total'), num(all.length));
    setText(document.getElementById('stat-launched'), num(launched));
    setText(document.getElementById('stat-exploded'), num(exploded));
    setText(document.getElementById('stat-unknown'), num(unknown));
    setText(document.getElementById('stat-messages'), num(messages));
    setText(document.getElementById('stat-missing'), num(missing));
  }

  function schedule() {
    if (visible) render();
  }

  function announce(changes) {
    if (!store.loaded) return;
    for (const { rocket, previous } of changes) {
      if (rocket.status === 'exploded' && (!previous || previous.status !== 'exploded')) {
        const reason = rocket.explosionReason ? `: ${rocket.explosionReason}` : '';
        announcements.append(h('p', null, `Rocket ${rocket.channel} exploded${reason}.`));
      }
    }
    while (announcements.children.length > 5) announcements.firstElementChild.remove();
  }

  // Changes are already batched per frame by the store.
  store.addEventListener('change', (event) => {
    announce(event.detail);
    schedule();
  });
  store.addEventListener('snapshot', schedule);

  let searchTimer = null;
  search.addEventListener('input', () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => {
      state.q = search.value.trim();
      shown = ROWS_STEP;
      writeState();
      render();
    }, 120);
  });
  for (const [select, field] of [[statusSelect, 'status'], [typeSelect, 'type'], [missionSelect, 'mission']]) {
    select.addEventListener('change', () => {
      state[field] = select.value;
      shown = ROWS_STEP;
      writeState();
      render();
    });
  }
  form.addEventListener('submit', (event) => event.preventDefault());
  form.addEventListener('reset', (event) => {
    event.preventDefault();
    state = { ...state, q: '', status: '', type: '', mission: '' };
    shown = ROWS_STEP;
    writeState();
    render();
    search.focus();
  });
  for (const th of headers) {
    th.querySelector('button').addEventListener('click', () => {
      const key = th.dataset.sort;
      if (state.sort === key) state.order = state.order === 'asc' ? 'desc' : 'asc';
      else {
        state.sort = key;
        // Biggest first is what one looks for in numbers and times.
        state.order = ['text', 'status'].includes(COLUMNS[key].kind) ? 'asc' : 'desc';
      }
      writeState();
      render();
    });
  }
  // The same choices as the header buttons, for narrow screens (cards, no headers).
  sortSelect.replaceChildren(...Object.entries(COLUMNS).flatMap(([key, column]) => {
    const [up, down] = {
      text: ['A to Z', 'Z to A'],
      status: ['exploded first', 'awaiting launch first'],
      time: ['oldest first', 'newest first'],
      number: ['lowest first', 'highest first'],
    }[column.kind];
    return [h('option', { value: `${key}:asc` }, `${column.label}, ${up}`),
      h('option', { value: `${key}:desc` }, `${column.label}, ${down}`)];
  }));
  sortSelect.addEventListener('change', () => {
    const [sort, order] = sortSelect.value.split(':');
    state.sort = sort;
    state.order = order;
    writeState();
    render();
  });
  more.addEventListener('click', () => {
    shown += ROWS_STEP;
    render();
  });

  return {
    section,
    title: 'Rockets · SpaceT',
    heading: document.getElementById('list-title'),
    show() {
      state = readState();
      visible = true;
      section.hidden = false;
      render();
    },
    hide() {
      visible = false;
      section.hidden = true;
    },
    get url() {
      return url();
    },
  };
}
