// The rockets the page knows, and the live feed that keeps them current.
//
// The feed is `GET /rockets/events` (server-sent events, one rocket state per
// event). The page opens it first and then reads the full list (`GET /rockets`,
// page by page), so no change falls between the two. When the connection drops,
// EventSource reconnects by itself with Last-Event-ID and the server replays what
// changed meanwhile. When the server refuses the stream (an HTTP error: the
// browser then gives up), the page opens a new stream after a pause and reads
// the list again. States can arrive twice or out of order: per channel the one
// with the most messages wins (a rocket's state only grows with its messages).

/** Most rockets the page loads (the list is read 100 at a time). */
export const MAX_ROCKETS = 20000;
const PAGE = 100;
const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30000;

/** True when `next` is a later state of the same rocket than `current`. */
export function isNewer(current, next) {
  if (!current) return true;
  if (next.messagesReceived !== current.messagesReceived) {
    return next.messagesReceived > current.messagesReceived;
  }
  return String(next.updatedAt) > String(current.updatedAt);
}

/** Fetches JSON; throws an Error whose message is the server's own. */
export async function getJson(url, { signal } = {}) {
  const response = await fetch(url, { headers: { accept: 'application/json' }, signal });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const error = new Error((body && body.message) || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

/**
 * Every rocket, by channel. Dispatches `change` (detail: the changed rockets)
 * after each batch of updates, and `snapshot` when the full list was read.
 */
export class RocketStore extends EventTarget {
  constructor() {
    super();
    this.rockets = new Map();
    this.loaded = false;
    this.truncated = false;
    this.pending = new Map();
    this.flushScheduled = false;
  }

  get(channel) {
    return this.rockets.get(channel);
  }

  all() {
    return Array.from(this.rockets.values());
  }

  /** Takes a state if it is newer; changes are announced once per frame. */
  put(rocket) {
    if (!rocket || typeof rocket.channel !== 'string') return;
    const current = this.rockets.get(rocket.channel);
    if (!isNewer(current, rocket)) return;
    this.rockets.set(rocket.channel, rocket);
    this.pending.set(rocket.channel, { rocket, previous: current || null });
    if (!this.flushScheduled) {
      this.flushScheduled = true;
      // Batched: thousands of events a second make one render per frame.
      requestAnimationFrame(() => this.flush());
    }
  }

  flush() {
    this.flushScheduled = false;
    const changes = Array.from(this.pending.values());
    this.pending.clear();
    if (changes.length) this.dispatchEvent(new CustomEvent('change', { detail: changes }));
  }

  /** Reads every rocket (`GET /rockets`, a page at a time). */
  async load() {
    let cursor = '';
    let count = 0;
    do {
      const query = new URLSearchParams({ limit: String(PAGE) });
      if (cursor) query.set('cursor', cursor);
      const page = await getJson(`/rockets?${query}`);
      for (const rocket of page.rockets || []) this.put(rocket);
      count += (page.rockets || []).length;
      cursor = page.nextCursor || '';
    } while (cursor && count < MAX_ROCKETS);
    this.truncated = Boolean(cursor);
    this.loaded = true;
    this.flush();
    this.dispatchEvent(new CustomEvent('snapshot'));
  }
}

/**
 * The live connection. `onStatus(state, text)` is told each change: `connecting`,
 * `live`, `reconnecting`, `offline`.
 */
export class LiveFeed {
  constructor(store, onStatus, onError) {
    this.store = store;
    this.onStatus = onStatus;
    this.onError = onError;
    this.source = null;
    this.needsList = true;
    this.retryMs = RETRY_MIN_MS;
    this.timer = null;
    this.lastEventAt = null;
  }

  start() {
    this.open();
    // A closed laptop lid or a lost network: try again as soon as it is back.
    window.addEventListener('online', () => {
      if (!this.source || this.source.readyState === EventSource.CLOSED) this.reopen(0);
    });
    // Leaving the page gives its stream slot back at once (the server holds
    // ROCKETS_MAX_WATCHERS of them); a page restored from the back/forward cache
    // starts over.
    window.addEventListener('pagehide', () => {
      clearTimeout(this.timer);
      if (this.source) this.source.close();
    });
    window.addEventListener('pageshow', (event) => {
      if (event.persisted) this.reopen(0);
    });
  }

  open() {
    clearTimeout(this.timer);
    this.onStatus('connecting', 'Connecting…');
    const source = new EventSource('/rockets/events');
    this.source = source;
    source.addEventListener('open', () => {
      this.onStatus('live', 'Live');
      if (!this.needsList) {
        this.retryMs = RETRY_MIN_MS;
        return;
      }
      this.needsList = false;
      this.store.load().then(
        () => {
          this.retryMs = RETRY_MIN_MS;
          this.onError(null);
        },
        (error) => {
          if (source !== this.source) return;
          this.onError(`Could not read the rockets: ${error.message}`);
          // Read it again with the next connection.
          this.reopen(this.retryMs);
          this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
        },
      );
    });
    source.addEventListener('message', (event) => {
      this.lastEventAt = new Date();
      let rocket;
      try {
        rocket = JSON.parse(event.data);
      } catch {
        return;
      }
      this.store.put(rocket);
    });
    source.addEventListener('error', () => {
      if (source !== this.source) return;
      if (source.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself and resumes with Last-Event-ID.
        this.onStatus('reconnecting', 'Reconnecting…');
      } else {
        // Refused (an HTTP error, such as 429 when every stream slot is taken): the
        // browser gave up. Show the rockets as they are, and try again after a pause.
        this.store.load().then(() => this.onError(null), (error) => {
          this.onError(`Could not read the rockets: ${error.message}`);
        });
        this.reopen(this.retryMs);
        this.retryMs = Math.min(this.retryMs * 2, RETRY_MAX_MS);
      }
    });
  }

  reopen(delayMs) {
    if (this.source) this.source.close();
    this.needsList = true;
    clearTimeout(this.timer);
    const seconds = Math.round(delayMs / 1000);
    this.onStatus('offline', seconds > 0 ? `Not live, retrying in ${seconds} s` : 'Not live, retrying');
    this.timer = setTimeout(() => this.open(), delayMs);
  }
}
