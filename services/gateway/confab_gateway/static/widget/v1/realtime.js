// Real-time: pusher-js (vendored, loaded from the gateway's widget folder) against
// Confab's fanout, and Feed, which hands a conversation's events on in seq order, each
// exactly once.

const PUSHER_FILE = 'vendor/pusher-8.6.0.min.js';
const pusherLoading = new Map();

// Loads the vendored pusher-js once per folder. It is a UMD bundle: an AMD loader on the
// host page would swallow it, so `define` is hidden while it runs, and a host page's own
// Pusher global is put back afterwards.
export function loadPusher(base) {
  const src = new URL(PUSHER_FILE, base).href;
  if (!pusherLoading.has(src)) {
    const loading = new Promise((resolve, reject) => {
      const previous = Object.getOwnPropertyDescriptor(window, 'Pusher');
      const amd = typeof window.define === 'function' && window.define.amd ? window.define : null;
      if (amd) window.define = undefined;
      const restore = () => {
        if (amd) window.define = amd;
        const ours = window.Pusher;
        if (previous) Object.defineProperty(window, 'Pusher', previous);
        else delete window.Pusher;
        return ours;
      };
      const script = document.createElement('script');
      script.src = src;
      script.async = true;
      script.onload = () => {
        const Pusher = restore();
        if (typeof Pusher === 'function') resolve(Pusher);
        else reject(new Error('pusher-js did not load'));
      };
      script.onerror = () => {
        restore();
        pusherLoading.delete(src);
        reject(new Error('pusher-js could not be loaded'));
      };
      document.head.append(script);
    });
    pusherLoading.set(src, loading);
  }
  return pusherLoading.get(src);
}

// One socket. `authorize(socketId, channelName)` resolves to the channel's signature
// ({auth, channel_data}); `handlers`: state(name), event(channel, name, data),
// subscribed(channel, again), failed(channel), members(channel, list), refused(code).
export class Realtime {
  constructor(Pusher, { appKey, websocketUrl, authorize }, handlers) {
    const url = new URL(websocketUrl);
    const secure = url.protocol === 'wss:';
    const port = Number(url.port) || (secure ? 443 : 80);
    this.handlers = handlers;
    this.subscribedOnce = new Set();
    this.failedChannels = new Set();
    this.refusals = new Map(); // channel → the HTTP status its last signature failed with
    this.retries = new Map(); // channel → {attempts, timer}
    this.pusher = new Pusher(appKey, {
      cluster: 'confab', // required by pusher-js; unused with wsHost
      wsHost: url.hostname,
      wsPort: port,
      wssPort: port,
      wsPath: url.pathname && url.pathname !== '/' ? url.pathname.replace(/\/+$/, '') : '',
      forceTLS: secure,
      enabledTransports: secure ? ['wss'] : ['ws'],
      disableStats: true,
      activityTimeout: 30000,
      pongTimeout: 6000,
      // Signatures come through the client's API, so a renewed session token is used.
      channelAuthorization: {
        customHandler: ({ socketId, channelName }, callback) => {
          authorize(socketId, channelName).then(
            (signed) => callback(null, signed),
            (error) => {
              this.refusals.set(channelName, error && error.status);
              callback(error, null);
            },
          );
        },
      },
    });
    this.pusher.connection.bind('state_change', ({ current }) => handlers.state(current));
    // 4000–4099: the fanout refused the socket for good (4009: the session was revoked,
    // or the user banned or erased). pusher-js does not reconnect after these.
    this.pusher.connection.bind('error', (error) => {
      const code = error && error.data && error.data.code;
      if (Number.isInteger(code) && code >= 4000 && code < 4100) handlers.refused(code);
    });
  }

  get state() {
    return this.pusher.connection.state;
  }

  subscribe(channelName) {
    if (this.pusher.channel(channelName)) return;
    const channel = this.pusher.subscribe(channelName);
    const presence = channelName.startsWith('presence-');
    const members = () => {
      const list = [];
      channel.members.each((member) => list.push({ id: member.id, ...(member.info || {}) }));
      this.handlers.members(channelName, list);
    };
    channel.bind('pusher:subscription_succeeded', () => {
      this.forgetRetry(channelName);
      const again = this.subscribedOnce.has(channelName);
      this.subscribedOnce.add(channelName);
      this.failedChannels.delete(channelName);
      this.handlers.subscribed(channelName, again);
      if (presence) members();
    });
    channel.bind('pusher:subscription_error', () => {
      this.failedChannels.add(channelName);
      this.handlers.failed(channelName);
      this.retryLater(channelName);
    });
    if (presence) {
      channel.bind('pusher:member_added', members);
      channel.bind('pusher:member_removed', members);
    }
    channel.bind_global((event, data) => {
      if (!event.startsWith('pusher:')) this.handlers.event(channelName, event, data);
    });
  }

  unsubscribe(channelName) {
    this.forgetRetry(channelName);
    this.pusher.unsubscribe(channelName);
    this.failedChannels.delete(channelName);
  }

  // pusher-js never asks again for a channel whose signature failed. A refusal that may
  // pass (the service busy, a session being renewed, the network) is asked again after
  // 1, 2, 4 … 30 s; "not allowed" (403) and "no such conversation" (404) are final.
  retryLater(channelName) {
    const status = this.refusals.get(channelName);
    if (status === 403 || status === 404) return;
    const retry = this.retries.get(channelName) || { attempts: 0, timer: null };
    clearTimeout(retry.timer);
    const delay = Math.min(1000 * 2 ** retry.attempts, 30000);
    retry.attempts += 1;
    retry.timer = setTimeout(() => {
      retry.timer = null;
      const channel = this.pusher.channel(channelName);
      if (channel && !channel.subscribed && this.failedChannels.has(channelName)) {
        this.pusher.subscribe(channelName); // the same channel object, bindings kept
      }
    }, delay);
    this.retries.set(channelName, retry);
  }

  forgetRetry(channelName) {
    const retry = this.retries.get(channelName);
    if (retry) clearTimeout(retry.timer);
    this.retries.delete(channelName);
    this.refusals.delete(channelName);
  }

  // The browser says the network is gone: an open socket cannot be trusted (and a
  // browser may keep it half-open), so close it; connect() subscribes again.
  disconnect() {
    this.pusher.disconnect();
  }

  connect() {
    this.pusher.connect();
  }
}

// A conversation's events in seq order, each exactly once, whatever their source:
// live from the socket, or the backlog from GET …/events?after=. Until start(cursor) is
// called (when the snapshot it follows has loaded) events wait. A gap (a seq past the
// next one) asks `fetchAfter(seq)` for the backlog, again after a pause if the backlog
// does not close it yet. A catch-up asked for before start (the channel subscribed while
// the snapshot loads) is owed, and made on start: the snapshot may have been read before
// an event the subscription came too late to get live. For the same reason, one asked for
// while another is out is made again when that one is done: the one out may have read the
// log before what prompted the new one.
export class Feed {
  constructor(fetchAfter, apply) {
    this.fetchAfter = fetchAfter;
    this.apply = apply;
    this.cursor = null;
    this.pending = new Map();
    this.catching = null;
    this.retry = null;
    this.attempts = 0;
    this.owed = false; // a catch-up asked for before start
    this.again = false; // a catch-up asked for while one was out
  }

  push(seq, name, data) {
    if (this.cursor !== null && seq <= this.cursor) return;
    this.pending.set(seq, { seq, name, data });
    if (this.cursor === null) return;
    this.drain();
    if (this.pending.size) this.catchUp();
  }

  start(cursor) {
    this.cursor = cursor;
    this.drain();
    if (this.pending.size || this.owed) this.catchUp();
  }

  // Ask the server for everything after the cursor (after a reconnect, or a gap).
  catchUp() {
    if (this.cursor === null) {
      this.owed = true;
      return Promise.resolve();
    }
    this.owed = false;
    if (this.catching) {
      this.again = true;
      return this.catching;
    }
    this.catching = this.fetchBacklog().finally(() => {
      this.catching = null;
      if (this.again) {
        this.again = false;
        this.catchUp();
      }
    });
    return this.catching;
  }

  async fetchBacklog() {
    clearTimeout(this.retry);
    let more = true;
    try {
      while (more) {
        const page = await this.fetchAfter(this.cursor);
        for (const event of page.data) {
          if (event.seq > this.cursor) {
            this.pending.delete(event.seq);
            this.cursor = event.seq;
            this.apply(event.event, event.data, event.seq);
          }
        }
        more = page.has_more && page.data.length > 0;
      }
      this.drain();
      if (this.pending.size && this.attempts >= 6) {
        // The complete backlog never had the missing seqs: go on from the next known one.
        this.cursor = Math.min(...this.pending.keys()) - 1;
        this.drain();
      }
    } catch {
      // Offline or unavailable: try again later.
    }
    if (this.pending.size) this.later();
    else this.attempts = 0;
  }

  later() {
    clearTimeout(this.retry);
    const delay = Math.min(250 * 2 ** this.attempts, 5000);
    this.attempts += 1;
    this.retry = setTimeout(() => this.catchUp(), delay);
  }

  drain() {
    for (const seq of this.pending.keys()) if (seq <= this.cursor) this.pending.delete(seq);
    while (this.pending.has(this.cursor + 1)) {
      const next = this.pending.get(this.cursor + 1);
      this.pending.delete(next.seq);
      this.cursor = next.seq;
      this.apply(next.name, next.data, next.seq);
    }
  }

  stop() {
    clearTimeout(this.retry);
  }
}
