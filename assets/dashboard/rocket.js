// One rocket's page: its state (live), its speed over time, its missing
// messages and its history.
//
// The state comes from the live feed; the history (`GET /rockets/{channel}/messages`,
// read page by page) and the missing ranges (`GET /rockets/{channel}`) are read
// again, at most once a second, whenever the feed says the rocket changed.

import { h, setText, num, when, timeElement, statusBadge } from './dom.js';
import { getJson } from './store.js';
import { speedChart, speedSeries } from './chart.js';

/** Most messages read for one rocket (1,000 per request). */
const MAX_MESSAGES = 20000;
const HISTORY_PAGE = 1000;
/** Rows of the message table. */
const MAX_MESSAGE_ROWS = 500;
const REFRESH_MS = 1000;

export function createRocketView(store, onError) {
  const section = document.getElementById('rocket-view');
  const title = document.getElementById('rocket-title');
  const channelLine = document.getElementById('rocket-channel');
  const statusLine = document.getElementById('rocket-status');
  const body = document.getElementById('rocket-body');
  const facts = document.getElementById('rocket-facts');
  const chartBox = document.getElementById('chart');
  const caption = document.getElementById('chart-caption');
  const missing = document.getElementById('missing');
  const messagesSummary = document.getElementById('messages-summary');
  const messageRows = document.getElementById('message-rows');

  let channel = null;
  let generation = 0;
  let series = [];
  let detail = null;
  let lastRead = 0;
  let timer = null;
  let reading = false;
  let readAgain = false;
  let truncated = false;

  const resize = new ResizeObserver(() => drawChart());
  resize.observe(chartBox);

  function fact(label, value) {
    return h('div', { class: 'fact' }, h('dt', null, label), h('dd', null, value));
  }

  function renderState() {
    const rocket = store.get(channel) || detail;
    if (!rocket) return;
    const short = rocket.type ? `${rocket.type} rocket` : 'Rocket';
    setText(title, rocket.mission ? `${short} on ${rocket.mission}` : short);
    document.title = `${title.textContent} · SpaceT`;
    statusLine.replaceChildren(statusBadge(rocket),
      rocket.status === 'exploded' && rocket.explosionReason
        ? h('span', { class: 'reason' }, `Reason: ${rocket.explosionReason}`) : null);
    section.dataset.status = rocket.status;
    facts.replaceChildren(
      fact('Speed', num(rocket.speed)),
      fact('Launch speed', num(rocket.launchSpeed)),
      fact('Type', rocket.type || '–'),
      fact('Mission', rocket.mission || '–'),
      fact('Launched', timeElement(rocket.launchedAt)),
      fact('Messages received', num(rocket.messagesReceived)),
      fact('Missing messages', num(rocket.missingMessages)),
      fact('Last message', [`#${rocket.lastMessageNumber} · `, timeElement(rocket.lastMessageTime)]),
      fact('Updated', timeElement(rocket.updatedAt)),
    );
  }

  function renderMissing() {
    if (!detail) return;
    const ranges = detail.missingRanges || [];
    const total = detail.missingMessages || 0;
    if (total === 0) {
      missing.replaceChildren(h('p', { class: 'ok', id: 'missing-none' },
        `None: every message up to #${detail.lastMessageNumber} has arrived.`));
      return;
    }
    const listed = ranges.reduce((sum, r) => sum + (r.to - r.from + 1), 0);
    const items = ranges.map((r) => h('li', { class: 'missing-range' },
      r.from === r.to ? `#${r.from}` : `#${r.from} – #${r.to}`,
      h('span', { class: 'muted' }, r.from === r.to ? ' (1 message)' : ` (${num(r.to - r.from + 1)} messages)`)));
    missing.replaceChildren(
      h('p', null, `${num(total)} ${total === 1 ? 'message is' : 'messages are'} missing below #${detail.lastMessageNumber}.`
        + (listed < total ? ` The first ${ranges.length} ranges are listed.` : '')),
      h('ul', { class: 'ranges', id: 'missing-ranges' }, items),
    );
  }

  function drawChart() {
    if (!channel || section.hidden) return;
    const width = chartBox.clientWidth || 600;
    chartBox.replaceChildren(speedChart(series, width, 'chart-caption'));
  }

  function renderHistory(messages) {
    series = speedSeries(messages);
    drawChart();
    if (series.length) {
      const speeds = series.map((p) => p.speed);
      const first = series[0];
      const last = series[series.length - 1];
      setText(caption,
        `Speed after each of ${num(series.length)} messages, from ${num(first.speed)} (#${first.number}${Number.isFinite(first.time) ? `, ${when(new Date(first.time).toISOString())}` : ''})`
        + ` to ${num(last.speed)} (#${last.number}); lowest ${num(Math.min(...speeds))}, highest ${num(Math.max(...speeds))}.`
        + (series.some((p, i) => i > 0 && p.number !== series[i - 1].number + 1) ? ' Dashed: messages missing in between.' : '')
        + (truncated ? ` Only the first ${num(series.length)} messages are drawn.` : ''));
    } else {
      setText(caption, 'No messages yet.');
    }
    const rows = series.slice(-MAX_MESSAGE_ROWS).reverse();
    const byNumber = new Map(messages.map((m) => [m.number, m]));
    messageRows.replaceChildren(...rows.map((p) => {
      const m = byNumber.get(p.number);
      return h('tr', { class: m.type === 'RocketExploded' ? 'is-exploded' : null },
        h('td', { class: 'num' }, `#${m.number}`),
        h('td', null, m.type),
        h('td', null, timeElement(m.time)),
        h('td', { class: 'mono small' }, JSON.stringify(m.message)),
        h('td', { class: 'num' }, num(p.speed)));
    }));
    setText(messagesSummary, messages.length > MAX_MESSAGE_ROWS
      ? `The latest ${MAX_MESSAGE_ROWS} of ${num(messages.length)} messages, newest first.`
      : `${num(messages.length)} ${messages.length === 1 ? 'message' : 'messages'}, newest first.`);
  }

  /** Reads the rocket (with its missing ranges) and its whole history. */
  async function read() {
    if (reading) { readAgain = true; return; }
    reading = true;
    const mine = generation;
    const path = `/rockets/${encodeURIComponent(channel)}`;
    try {
      const rocket = await getJson(path);
      const messages = [];
      let after = 0;
      truncated = false;
      for (;;) {
        const page = await getJson(`${path}/messages?after=${after}&pageSize=${HISTORY_PAGE}`);
        messages.push(...(page.messages || []));
        if (page.nextAfter === null || page.nextAfter === undefined || page.nextAfter === 0) break;
        if (messages.length >= MAX_MESSAGES) { truncated = true; break; }
        after = page.nextAfter;
      }
      if (mine !== generation) return;
      detail = rocket;
      body.hidden = false;
      store.put(rocket);
      onError(null);
      renderState();
      renderMissing();
      renderHistory(messages);
      section.setAttribute('aria-busy', 'false');
    } catch (error) {
      if (mine !== generation) return;
      if (error.status === 404 || error.status === 400) {
        setText(title, 'Rocket not found');
        document.title = 'Rocket not found · SpaceT';
        statusLine.replaceChildren();
        body.hidden = true;
        onError(`No rocket has the channel “${channel}” (${error.message}).`);
      } else {
        onError(`Could not read this rocket: ${error.message}`);
      }
      section.setAttribute('aria-busy', 'false');
    } finally {
      reading = false;
      lastRead = Date.now();
      if (readAgain && mine === generation) {
        readAgain = false;
        refresh();
      }
    }
  }

  /** Reads again soon, at most once per REFRESH_MS. */
  function refresh() {
    if (timer) return;
    const wait = Math.max(0, lastRead + REFRESH_MS - Date.now());
    timer = setTimeout(() => {
      timer = null;
      if (channel) read();
    }, wait);
  }

  store.addEventListener('change', (event) => {
    if (!channel || section.hidden) return;
    if (event.detail.some(({ rocket }) => rocket.channel === channel)) {
      renderState();
      refresh();
    }
  });

  return {
    section,
    get title() {
      return document.title;
    },
    heading: title,
    show(newChannel) {
      generation += 1;
      channel = newChannel;
      detail = null;
      series = [];
      lastRead = 0;
      readAgain = false;
      clearTimeout(timer);
      timer = null;
      section.hidden = false;
      body.hidden = false;
      section.setAttribute('aria-busy', 'true');
      setText(channelLine, `Channel ${newChannel}`);
      setText(title, 'Rocket');
      statusLine.replaceChildren();
      facts.replaceChildren();
      missing.replaceChildren(h('p', { class: 'muted' }, 'Loading…'));
      messageRows.replaceChildren();
      setText(messagesSummary, '');
      setText(caption, 'Loading…');
      chartBox.replaceChildren();
      renderState();
      reading = false;
      read();
    },
    hide() {
      generation += 1;
      channel = null;
      clearTimeout(timer);
      timer = null;
      section.hidden = true;
    },
  };
}
