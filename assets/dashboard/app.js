// The dashboard: one live feed, two views (the rocket table at /dashboard, a
// rocket's page at /dashboard/rockets/{channel}), routed here without reloads.

import { RocketStore, LiveFeed } from './store.js';
import { createListView } from './table.js';
import { createRocketView } from './rocket.js';
import { setText } from './dom.js';

const store = new RocketStore();
const banner = document.getElementById('banner');
const connection = document.getElementById('connection');
const connectionText = document.getElementById('connection-text');

/** Problems to show, by source: the live feed's and the current view's. */
const problems = { feed: null, view: null };

function reporter(source) {
  return (message) => {
    problems[source] = message || null;
    const text = [problems.view, problems.feed].filter(Boolean).join(' ');
    banner.hidden = !text;
    setText(banner, text);
  };
}
const showError = reporter('view');

const list = createListView(store);
const rocket = createRocketView(store, showError);
const backLink = document.getElementById('back-link');
let current = null;

function route(focus) {
  const match = /^\/dashboard\/rockets\/([^/]+)\/?$/.exec(window.location.pathname);
  const next = match ? rocket : list;
  if (current === list && next !== list) backLink.setAttribute('href', list.url);
  if (current && current !== next) current.hide();
  current = next;
  showError(null);
  if (match) {
    let channel = match[1];
    try {
      channel = decodeURIComponent(channel);
    } catch {
      // Shown as typed; the server will say it is no channel.
    }
    rocket.show(channel);
  } else {
    list.show();
    document.title = list.title;
  }
  if (focus) {
    // Tell keyboard and screen reader users where they landed.
    next.heading.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
}

// Links marked data-route change the view in place; others behave as links.
document.addEventListener('click', (event) => {
  const link = event.target.closest('a[data-route]');
  if (!link || event.defaultPrevented || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  const url = new URL(link.href, window.location.href);
  if (url.origin !== window.location.origin) return;
  event.preventDefault();
  if (url.pathname + url.search !== window.location.pathname + window.location.search) {
    window.history.pushState({}, '', url.pathname + url.search);
  }
  route(true);
});
window.addEventListener('popstate', () => route(true));

new LiveFeed(
  store,
  (state, text) => {
    connection.dataset.state = state;
    setText(connectionText, text);
  },
  reporter('feed'),
).start();
route(false);
