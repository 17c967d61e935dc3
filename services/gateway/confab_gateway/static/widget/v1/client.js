// The headless Confab client: the conversation list, threads with history paging,
// sending with an optimistic local copy and a client_msg_id, edits, reactions, typing,
// read marks, attachments, presence and gap-free catch-up, as events on an EventTarget.
// The widget (widget.js) is drawn on it; build your own interface the same way:
//
//   import { createClient } from 'https://chat.example.com/widget/v1/client.js';
//   const client = createClient({ sessionToken, refreshSession: async () => newToken });
//   client.on('message', ({ conversationId, message }) => …);
//   await client.start();
//
// Types: client.d.ts beside this file. Invariants:
// - A conversation's events are applied in seq order, each once (Feed), whatever their
//   source: the socket, or GET …/events?after= after a reconnect, a gap or without a socket.
// - A message you send appears at once as a local copy (id "local:<client_msg_id>",
//   status sending, queued or failed); the stored message replaces it (`replaces`), once.
// - A 401 asks refreshSession once and repeats the call; without one (or when it fails)
//   the session is over: 'session' {state: 'expired'}, until setSession(token).

import { Api, ApiError } from './api.js';
import { Feed, loadPusher, Realtime } from './realtime.js';

export { ApiError };

const HERE = new URL('./', import.meta.url).href;
// The gateway this file came from (/widget/v1/ or its versioned copy /widget/v1/<build>/).
// Bundled into your own code, pass apiUrl.
const GATEWAY = HERE.replace(/widget\/v1\/(?:[^/]+\/)?$/, '');
const POLL_MS = 3000; // without live events: loaded threads by REST
const LIST_EVERY_POLLS = 5;
const TYPING_SEND_EVERY_MS = 2500;
const TYPING_IDLE_MS = 4000;
const TYPING_SHOWN_MS = 6000;
const RENEW_BEFORE_MS = 60_000;
const URL_FALLBACK_MS = 10 * 60_000; // a presigned URL whose lifetime it does not state
const ATTACHMENT_RETRY_WAITS_MS = [1000, 3000]; // a failed ask for fresh URLs, again
export const MAX_CONTENT = 10_000; // characters (code points), as the server counts them

export function createClient(options) {
  return new ConfabClient(options);
}

export class ConfabClient extends EventTarget {
  constructor(options = {}) {
    super();
    const token = options.sessionToken || options.token;
    if (!token || typeof token !== 'string') {
      throw new TypeError('Confab: a session token is required (sessionToken).');
    }
    this.options = options;
    const apiUrl = String(options.apiUrl || GATEWAY).replace(/\/+$/, '');
    this.assetsUrl = String(options.assetsUrl || `${apiUrl}/widget/v1/`);
    this.api = new Api(apiUrl, token, (used) => this.renewSession(used));
    this.session = { state: 'active', expiresAt: toTime(options.sessionExpiresAt) };
    this.me = null;
    this.user = null;
    this.connection = 'connecting';
    this.records = new Map();
    this.order = [];
    this.listState = { loaded: false, error: null };
    this.realtime = null;
    this.realtimeBroken = false;
    this.everConnected = false;
    this.offline = typeof navigator !== 'undefined' && navigator.onLine === false;
    this.cleanups = [];
    this.typingSent = { id: null, at: 0, idle: null };
  }

  // -- events ------------------------------------------------------------------------------

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  /** Calls handler(detail) for each `type` event; returns a function that stops it. */
  on(type, handler) {
    const listener = (event) => handler(event.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  // -- start and stop ----------------------------------------------------------------------

  /** Who you are, the conversation list (one request) and the socket. Rejects with an
   *  ApiError when the session is not valid. */
  start() {
    if (!this.starting) {
      this.starting = this.begin();
      this.starting.catch(() => {
        this.starting = null;
      });
    }
    return this.starting;
  }

  async begin() {
    if (!this.cleanups.length) {
      this.listen(window, 'online', () => this.onNetwork(true));
      this.listen(window, 'offline', () => this.onNetwork(false));
    }
    const list = this.api.conversations().catch((error) => error);
    this.me = await this.api.me();
    this.user = this.me.user;
    const page = await list;
    if (page instanceof ApiError) {
      if (page.status === 401) throw page;
      this.listState = { loaded: false, error: page };
      this.emit('conversations', { error: page });
    } else {
      this.takeList(page);
    }
    this.scheduleRenewal();
    this.connect();
    clearInterval(this.poller);
    this.poller = setInterval(() => this.poll(), POLL_MS);
    return this;
  }

  destroy() {
    this.stopped = true;
    clearInterval(this.poller);
    clearTimeout(this.renewTimer);
    clearTimeout(this.listTimer);
    for (const undo of this.cleanups) undo();
    this.cleanups = [];
    for (const rec of this.records.values()) {
      rec.feed.stop();
      for (const entry of rec.typing.values()) clearTimeout(entry.timer);
    }
    if (this.realtime) this.realtime.pusher.disconnect();
    this.realtime = null;
  }

  listen(target, name, handler) {
    target.addEventListener(name, handler);
    this.cleanups.push(() => target.removeEventListener(name, handler));
  }

  // -- the session ---------------------------------------------------------------------------

  /** Give the client a new session token (and, if known, when it expires). */
  setSession(token, expiresAt) {
    if (!token || typeof token !== 'string') throw new TypeError('Confab: a token is required.');
    const wasOver = this.session.state !== 'active';
    this.api.token = token;
    this.session = { state: 'active', expiresAt: toTime(expiresAt) };
    this.scheduleRenewal();
    this.emit('session', { state: 'refreshed' });
    if (wasOver) {
      if (!this.me) this.start().catch(() => {});
      else {
        if (this.realtime) this.realtime.connect();
        this.refreshList();
      }
    }
  }

  /** Called on a 401 with the token that got it: asks refreshSession once for all callers. */
  renewSession(used = this.api.token) {
    if (this.api.token !== used && this.session.state === 'active') return Promise.resolve(true);
    if (!this.options.refreshSession) {
      this.expire();
      return Promise.resolve(false);
    }
    if (!this.renewing) {
      this.renewing = (async () => {
        try {
          const got = await this.options.refreshSession();
          const token = typeof got === 'string' ? got : got && got.token;
          if (!token) throw new Error('refreshSession gave no token');
          this.setSession(token, got && (got.expiresAt || got.expires_at));
          return true;
        } catch {
          this.expire();
          return false;
        } finally {
          this.renewing = null;
        }
      })();
    }
    return this.renewing;
  }

  expire() {
    if (this.session.state === 'expired') return;
    this.session = { ...this.session, state: 'expired' };
    clearTimeout(this.renewTimer);
    if (this.realtime) this.realtime.disconnect();
    this.updateConnection();
    this.emit('session', { state: 'expired' });
  }

  // Renew a minute before the session's end, when the page said when that is.
  scheduleRenewal() {
    clearTimeout(this.renewTimer);
    const { expiresAt } = this.session;
    if (!expiresAt || !this.options.refreshSession || this.stopped) return;
    const wait = Math.max(5_000, expiresAt - Date.now() - RENEW_BEFORE_MS);
    this.renewTimer = setTimeout(
      () => (wait >= 86_400_000 ? this.scheduleRenewal() : this.renewSession()),
      Math.min(wait, 86_400_000),
    );
  }

  // -- the connection ------------------------------------------------------------------------

  async connect() {
    let Pusher = this.options.Pusher;
    if (!Pusher) {
      try {
        Pusher = await loadPusher(this.assetsUrl);
      } catch {
        this.realtimeBroken = true;
        this.updateConnection();
        return;
      }
    }
    if (this.stopped) return;
    this.realtime = new Realtime(
      Pusher,
      {
        appKey: this.me.app_key,
        websocketUrl: this.me.websocket_url,
        authorize: (socketId, channel) => this.api.channelAuth(socketId, channel),
      },
      {
        state: (state) => {
          if (state === 'connected') this.everConnected = true;
          this.updateConnection();
        },
        event: (channel, name, data) => this.onLiveEvent(channel, name, data),
        subscribed: (channel, again) => this.onSubscribed(channel, again),
        failed: () => this.updateConnection(),
        members: (channel, list) => this.onMembers(channel, list),
        refused: () => this.onRefused(),
      },
    );
    if (this.offline || this.session.state !== 'active') this.realtime.disconnect();
    this.realtime.subscribe(`private-user.${this.user.id}`);
    for (const id of this.records.keys()) this.realtime.subscribe(`private-conversation.${id}`);
    for (const rec of this.records.values()) {
      if (rec.presence) this.realtime.subscribe(`presence-conversation.${rec.id}`);
    }
    this.updateConnection();
  }

  // The fanout closed the socket for good (a revoked session): a new token, then again.
  async onRefused() {
    if ((await this.renewSession(this.api.token)) && this.realtime) this.realtime.connect();
  }

  onNetwork(online) {
    this.offline = !online;
    if (this.realtime && this.session.state === 'active') {
      if (online) this.realtime.connect();
      else this.realtime.disconnect();
    }
    this.updateConnection();
    if (!online) return;
    for (const rec of this.records.values()) {
      for (const local of rec.thread ? rec.thread.pending.values() : []) {
        if (local.status === 'queued') this.deliver(rec, local);
      }
    }
    if (this.connection !== 'live') this.poll(true);
  }

  updateConnection() {
    let state;
    const rt = this.realtime;
    if (this.session.state !== 'active') state = 'ended';
    else if (this.offline) state = 'offline';
    else if (this.realtimeBroken) state = 'unavailable';
    else if (!rt) state = 'connecting';
    else if (rt.state === 'connected') state = rt.failedChannels.size ? 'unavailable' : 'live';
    else if (rt.state === 'failed') state = 'unavailable';
    else state = this.everConnected ? 'reconnecting' : 'connecting';
    if (state === this.connection) return;
    this.connection = state;
    this.emit('connection', { state });
  }

  // Without live events (no socket, or a channel refused): loaded threads by REST.
  poll(now = false) {
    if (this.offline || this.connection === 'live' || !this.me) return;
    if (this.session.state !== 'active') return;
    if (!now && this.connection === 'connecting') return;
    for (const rec of this.records.values()) {
      if (rec.thread && rec.thread.loaded) rec.feed.catchUp();
    }
    this.pollTick = (this.pollTick || 0) + 1;
    if (now || this.pollTick % LIST_EVERY_POLLS === 0) this.scheduleListRefresh();
  }

  onSubscribed(channel, again) {
    this.updateConnection();
    if (channel.startsWith('private-user.')) {
      // Subscribed again after a drop: conversations made meanwhile come with the list.
      if (again) this.scheduleListRefresh();
      return;
    }
    const rec = this.records.get(channel.replace(/^private-conversation\./, ''));
    // What happened while we were not subscribed (since the list or the snapshot, or
    // while the socket was down) is fetched by seq: usually an empty page.
    if (rec) rec.feed.catchUp();
  }

  onMembers(channel, list) {
    const rec = this.records.get(channel.replace(/^presence-conversation\./, ''));
    if (!rec) return;
    const seen = new Map(list.map((m) => [m.id, m]));
    rec.members = [...seen.values()];
    this.emit('presence', { conversationId: rec.id, members: rec.members });
  }

  onLiveEvent(channel, name, data) {
    if (!data || typeof data !== 'object') return;
    if (channel.startsWith('private-user.')) {
      if (name === 'conversation.created' && data.id) {
        if (!this.records.has(data.id)) {
          this.record(data);
          this.sortList();
          this.emit('conversations', {});
        }
        this.scheduleListRefresh();
      }
      return;
    }
    const rec = this.records.get(channel.replace(/^private-conversation\./, ''));
    if (!rec) return;
    if (name === 'user.typing') return this.onTyping(rec, data);
    const seq = Number.isInteger(data.event_seq) ? data.event_seq : null;
    if (seq === null) this.apply(rec, name, data);
    else rec.feed.push(seq, name, data);
  }

  // -- conversations -------------------------------------------------------------------------

  /** The conversation list, newest activity first: summaries with `unread_count`. */
  get conversations() {
    return this.order.map((id) => this.conversation(id));
  }

  conversation(id) {
    const rec = this.records.get(id);
    return rec ? { ...rec.conv, unread_count: rec.unread } : null;
  }

  get listLoaded() {
    return this.listState.loaded;
  }

  get listError() {
    return this.listState.error;
  }

  get unreadTotal() {
    let total = 0;
    for (const rec of this.records.values()) total += rec.unread;
    return total;
  }

  record(conv) {
    let rec = this.records.get(conv.id);
    if (!rec) {
      rec = {
        id: conv.id,
        conv,
        unread: conv.unread_count || 0,
        thread: null,
        typing: new Map(),
        readSent: 0,
        members: null,
        presence: false,
      };
      rec.feed = new Feed(
        (after) => this.api.events(rec.id, after),
        (name, data) => this.apply(rec, name, data),
      );
      rec.feed.start(conv.last_seq || 0);
      this.records.set(conv.id, rec);
      if (this.realtime) this.realtime.subscribe(`private-conversation.${conv.id}`);
    }
    return rec;
  }

  /** Fetch the conversation list again (the client does so itself when it must). */
  async refreshList() {
    try {
      this.takeList(await this.api.conversations());
    } catch (error) {
      if (!this.listState.loaded) {
        this.listState = { loaded: false, error };
        this.emit('conversations', { error });
      }
      throw error;
    }
  }

  takeList(page) {
    for (const conv of page.data) {
      const known = this.records.has(conv.id);
      const rec = this.record(conv);
      if (!known) continue;
      const behind = (conv.last_seq || 0) < (rec.feed.cursor || 0);
      if (rec.thread) {
        // The thread follows its own events; take the summary's people and read marks.
        const participants = mergePeople(conv.participants, rec.conv.participants);
        rec.conv = { ...rec.conv, participants, title: conv.title };
      } else if (!behind) {
        rec.conv = conv;
        rec.unread = conv.unread_count || 0;
        if ((conv.last_seq || 0) > rec.feed.cursor) rec.feed.start(conv.last_seq);
      }
    }
    this.listState = { loaded: true, error: null };
    this.sortList();
    this.emit('conversations', {});
  }

  scheduleListRefresh() {
    clearTimeout(this.listTimer);
    this.listTimer = setTimeout(() => this.refreshList().catch(() => {}), 300);
  }

  sortList() {
    this.order = [...this.records.values()]
      .sort((a, b) => String(b.conv.last_activity_at).localeCompare(String(a.conv.last_activity_at)))
      .map((rec) => rec.id);
  }

  // -- a thread ------------------------------------------------------------------------------

  /** Loads a conversation (one you were just added to, too) and its latest messages. */
  async open(id) {
    let rec = this.records.get(id);
    if (!rec) {
      const snapshot = await settled(() => this.api.conversation(id));
      rec = this.records.get(id) || this.record(snapshot.conversation);
      this.sortList();
      this.emit('conversations', {});
      if (!rec.thread) this.takeSnapshot(rec, snapshot, rec.feed.cursor);
    }
    if (!rec.thread || !rec.thread.loaded) await this.loadThread(rec);
    return this.conversation(id);
  }

  /** {loaded, loading, error, hasMore, loadingOlder} of a conversation's messages. */
  thread(id) {
    const rec = this.records.get(id);
    const t = rec && rec.thread;
    if (!t) return { loaded: false, loading: false, error: null, hasMore: false, loadingOlder: false };
    return {
      loaded: t.loaded,
      loading: Boolean(t.loading),
      error: t.error,
      hasMore: t.hasMore,
      loadingOlder: t.loadingOlder,
    };
  }

  /** A loaded conversation's messages in seq order, then your local copies. */
  messages(id) {
    const rec = this.records.get(id);
    if (!rec || !rec.thread) return [];
    const stored = [...rec.thread.messages.values()].sort((a, b) => a.seq - b.seq);
    return [...stored, ...rec.thread.pending.values()];
  }

  message(id, messageId) {
    const rec = this.records.get(id);
    if (!rec || !rec.thread) return null;
    if (messageId.startsWith('local:')) return rec.thread.pending.get(messageId.slice(6)) || null;
    return rec.thread.messages.get(messageId) || null;
  }

  newThread() {
    return {
      messages: new Map(),
      pending: new Map(),
      hasMore: false,
      loaded: false,
      loading: null,
      error: null,
      loadingOlder: false,
    };
  }

  loadThread(rec) {
    if (rec.thread && rec.thread.loading) return rec.thread.loading;
    const pending = rec.thread ? rec.thread.pending : new Map();
    rec.thread = { ...this.newThread(), pending };
    const before = rec.feed.cursor;
    rec.feed.cursor = null; // live events wait for the snapshot
    const loading = (async () => {
      let snapshot;
      try {
        snapshot = await settled(() => this.api.conversation(rec.id));
      } catch (error) {
        rec.thread.error = error;
        rec.thread.loading = null;
        rec.feed.start(before);
        this.emit('messages', { conversationId: rec.id, reason: 'failed', error });
        throw error;
      }
      this.takeSnapshot(rec, snapshot, before);
    })();
    rec.thread.loading = loading;
    this.emit('messages', { conversationId: rec.id, reason: 'loading' });
    return loading;
  }

  takeSnapshot(rec, snapshot, before) {
    if (!rec.thread) rec.thread = this.newThread();
    const thread = rec.thread;
    rec.conv = { ...rec.conv, ...snapshot.conversation };
    rec.unread = snapshot.conversation.unread_count ?? rec.unread;
    for (const message of snapshot.messages) thread.messages.set(message.id, stamped(message));
    thread.hasMore = snapshot.has_more;
    thread.loaded = true;
    thread.loading = null;
    thread.error = null;
    const cursor = snapshot.conversation.last_seq || 0;
    rec.feed.start(cursor);
    if (before !== null && cursor < before) rec.feed.catchUp();
    this.emit('messages', { conversationId: rec.id, reason: 'loaded' });
    this.emit('conversation', { conversationId: rec.id });
  }

  /** The page before the oldest loaded message; resolves to whether there is more. */
  async loadOlder(id) {
    const rec = this.records.get(id);
    const thread = rec && rec.thread;
    if (!thread || !thread.loaded || !thread.hasMore || thread.loadingOlder) {
      return Boolean(thread && thread.hasMore);
    }
    const seqs = [...thread.messages.values()].map((m) => m.seq);
    thread.loadingOlder = true;
    thread.olderError = null;
    this.emit('messages', { conversationId: id, reason: 'loading-older' });
    try {
      const page = await this.api.messages(id, {
        before: seqs.length ? Math.min(...seqs) : undefined,
        limit: 30,
      });
      if (rec.thread !== thread) return rec.thread.hasMore; // reloaded meanwhile: a page of the old one
      const added = [];
      for (const message of page.data) {
        if (!thread.messages.has(message.id)) {
          thread.messages.set(message.id, stamped(message));
          added.push(message);
        }
      }
      thread.hasMore = page.has_more;
      thread.loadingOlder = false;
      this.emit('messages', { conversationId: id, reason: 'older', added });
      return thread.hasMore;
    } catch (error) {
      thread.loadingOlder = false;
      this.emit('messages', { conversationId: id, reason: 'older-failed', error });
      throw error;
    }
  }

  // -- applying events (live, or from the backlog), each once, in seq order ----------------

  apply(rec, name, data) {
    const thread = rec.thread;
    const mine = this.user.id;
    // A thread's replies and read marks are the thread view's (threads.js, on 'event'):
    // the main timeline only counts the reply on its parent.
    if (data.parent_id) {
      if (name === 'message.created' && thread) this.replied(rec, data);
      this.emit('event', { conversationId: rec.id, name, data });
      return;
    }
    switch (name) {
      case 'message.created': {
        const senderId = data.sender ? data.sender.id : null;
        rec.conv = { ...rec.conv, last_message: data, last_activity_at: data.created_at };
        if (senderId) this.stopTyping(rec, senderId);
        if (senderId !== mine && !data.deleted && data.seq > this.readSeq(rec, mine)) {
          rec.unread += 1;
        }
        if (thread) this.upsert(rec, data, true);
        this.sortList();
        this.emit('conversations', {});
        break;
      }
      case 'message.updated':
        if (rec.conv.last_message && rec.conv.last_message.id === data.id) {
          rec.conv = { ...rec.conv, last_message: { ...rec.conv.last_message, ...data } };
        }
        if (thread) this.upsert(rec, data, true);
        break;
      case 'message.deleted': {
        const last = rec.conv.last_message;
        if (last && last.id === data.id) {
          rec.conv = { ...rec.conv, last_message: { ...last, content: '', deleted: true } };
        }
        const message = thread && thread.messages.get(data.id);
        const author = message ? message.sender : last && last.id === data.id ? last.sender : null;
        if (author && author.id !== mine && data.seq > this.readSeq(rec, mine) && rec.unread > 0) {
          rec.unread -= 1;
        }
        if (message) this.upsert(rec, { ...message, content: '', attachments: [], deleted: true });
        break;
      }
      case 'reaction.added':
      case 'reaction.removed': {
        const message = thread && thread.messages.get(data.message_id);
        if (message) this.react(rec, message, data.emoji, data.user_id, name === 'reaction.added');
        break;
      }
      case 'message.read': {
        const known = (rec.conv.participants || []).some((p) => p.id === data.user_id);
        const reader = { id: data.user_id, name: '', last_read_seq: data.seq };
        rec.conv = {
          ...rec.conv,
          participants: known
            ? mergePeople(rec.conv.participants, [reader])
            : [...(rec.conv.participants || []), reader],
        };
        if (!known) this.scheduleListRefresh(); // a new participant: their name comes with it
        if (data.user_id === mine) this.countUnread(rec);
        this.emit('read', { conversationId: rec.id, userId: data.user_id, seq: data.seq });
        break;
      }
      case 'participant.added':
      case 'participant.removed':
        this.scheduleListRefresh();
        break;
      default:
        break;
    }
    this.emit('event', { conversationId: rec.id, name, data });
    this.emit('conversation', { conversationId: rec.id });
  }

  // A reply in a thread: its parent's summary counts it.
  replied(rec, reply) {
    const parent = rec.thread.messages.get(reply.parent_id);
    if (!parent) return;
    const was = parent.thread || { reply_count: 0, participants: parent.sender ? [parent.sender.id] : [] };
    const people = was.participants || [];
    const who = reply.sender ? reply.sender.id : null;
    const thread = {
      reply_count: (was.reply_count || 0) + 1,
      last_reply_id: reply.id,
      last_reply_at: reply.created_at,
      participants: who && !people.includes(who) ? [...people, who] : people,
    };
    this.upsert(rec, { ...parent, thread });
  }

  readSeq(rec, userId) {
    const found = (rec.conv.participants || []).find((p) => p.id === userId);
    const seen = found ? found.last_read_seq || 0 : 0;
    return Math.max(seen, userId === this.user.id ? rec.readSent : 0);
  }

  /** Who of the others has read up to `seq` (or written after it). */
  readers(id, seq) {
    const rec = this.records.get(id);
    if (!rec) return [];
    const answered = new Set();
    for (const message of rec.thread ? rec.thread.messages.values() : []) {
      if (message.sender && message.seq > seq) answered.add(message.sender.id);
    }
    return (rec.conv.participants || []).filter(
      (p) => p.id !== this.user.id && ((p.last_read_seq || 0) >= seq || answered.has(p.id)),
    );
  }

  countUnread(rec) {
    const read = this.readSeq(rec, this.user.id);
    if (rec.thread && rec.thread.loaded) {
      let count = 0;
      for (const m of rec.thread.messages.values()) {
        if (m.seq > read && m.sender && m.sender.id !== this.user.id && !m.deleted) count += 1;
      }
      const seqs = [...rec.thread.messages.values()].map((m) => m.seq);
      // Unless the read mark is older than the loaded page, every unread message is in it.
      if (!rec.thread.hasMore || read >= Math.min(...seqs)) rec.unread = count;
    } else {
      const last = rec.conv.last_message;
      if (!last || read >= last.seq) rec.unread = 0;
    }
  }

  // Reactions: events name the user, so our own (already shown at the click) are not
  // counted twice.
  react(rec, message, emoji, userId, add) {
    const reactions = { ...(message.reactions || {}) };
    const current = reactions[emoji] || { count: 0, me: false };
    const mine = userId === this.user.id;
    if (mine && current.me === add) return;
    const count = Math.max(0, current.count + (add ? 1 : -1));
    if (count === 0) delete reactions[emoji];
    else reactions[emoji] = { count, me: mine ? add : current.me };
    this.upsert(rec, { ...message, reactions });
  }

  // Adds or replaces a message. Payloads of live events say `me: false` for every
  // reaction (they are the same for every reader): our own marks are kept.
  upsert(rec, message, fromEvent = false) {
    const thread = rec.thread;
    const existing = thread.messages.get(message.id);
    const incoming = stamped(message);
    let merged = incoming;
    if (existing) {
      merged = { ...existing, ...incoming };
      if (fromEvent && message.reactions) {
        const reactions = {};
        for (const [emoji, summary] of Object.entries(message.reactions)) {
          const had = existing.reactions && existing.reactions[emoji];
          reactions[emoji] = { count: summary.count, me: Boolean(had && had.me) };
        }
        merged.reactions = reactions;
      }
      if (message.sender && !message.sender.name && existing.sender) merged.sender = existing.sender;
      // Frames carry attachments without URLs (per reader, expiring): keep the ones we have.
      merged = withAttachmentUrls(merged, existing.attachments);
    }
    let replaces = null;
    if (
      merged.client_msg_id &&
      merged.sender &&
      merged.sender.id === this.user.id &&
      thread.pending.has(merged.client_msg_id)
    ) {
      thread.pending.delete(merged.client_msg_id);
      replaces = `local:${merged.client_msg_id}`;
    }
    thread.messages.set(merged.id, merged);
    this.emit('message', { conversationId: rec.id, message: merged, replaces, previous: existing });
  }

  // -- sending -------------------------------------------------------------------------------

  /** Sends a message; returns its local copy at once (see the module's note). `attachments`
   *  are what upload() resolved to. */
  send(id, { content = '', attachments = [], metadata, mentions = [] } = {}) {
    const rec = this.records.get(id);
    if (!rec) throw new Error(`Confab: unknown conversation ${id}`);
    if (!rec.thread) rec.thread = this.newThread();
    const text = String(content);
    if (codePoints(text) > MAX_CONTENT) throw new RangeError('Confab: the message is too long.');
    if (!text.trim() && !attachments.length) throw new RangeError('Confab: the message is empty.');
    const clientId = randomId();
    const local = {
      id: `local:${clientId}`,
      client_msg_id: clientId,
      conversation_id: id,
      seq: null,
      sender: { id: this.user.id, name: this.user.name, avatar_url: this.user.avatar_url || null },
      content: text.trim() ? text : attachments.map((a) => a.filename).join(', '),
      attachments,
      metadata: text.trim() ? metadata || {} : { ...(metadata || {}), confab_widget: { attachments_only: true } },
      reactions: {},
      created_at: new Date().toISOString(),
      edited_at: null,
      deleted: false,
      mentions,
      local: true,
      status: 'sending',
      error: null,
    };
    rec.thread.pending.set(clientId, local);
    this.stopTypingSignal(id);
    this.deliver(rec, local);
    return local;
  }

  /** Sends a failed or waiting local copy again (same client_msg_id: never twice). */
  retry(id, localId) {
    const rec = this.records.get(id);
    const local = rec && rec.thread && rec.thread.pending.get(localId.replace(/^local:/, ''));
    if (local) this.deliver(rec, local);
  }

  /** Forgets a local copy that was not sent. */
  discard(id, localId) {
    const rec = this.records.get(id);
    const clientId = localId.replace(/^local:/, '');
    if (rec && rec.thread && rec.thread.pending.delete(clientId)) {
      this.emit('message', {
        conversationId: id,
        message: { id: localId, local: true, discarded: true },
        replaces: localId,
      });
    }
  }

  async deliver(rec, sent) {
    const clientId = sent.client_msg_id;
    const local = this.updateLocal(rec, clientId, { status: 'sending', error: null });
    if (!local) return;
    const body = { content: local.content, client_msg_id: clientId };
    if (local.attachments.length) body.attachment_ids = local.attachments.map((a) => a.id);
    if (local.metadata && Object.keys(local.metadata).length) body.metadata = local.metadata;
    if (local.mentions && local.mentions.length) body.mentions = local.mentions;
    try {
      const message = await this.api.sendMessage(rec.id, body);
      if (rec.thread.pending.has(clientId)) {
        // The stored message has no URLs for what we just uploaded: keep ours.
        this.upsert(rec, withAttachmentUrls(message, local.attachments));
      }
    } catch (error) {
      this.updateLocal(rec, clientId, { status: error.offline ? 'queued' : 'failed', error });
    }
  }

  // A local copy changes as a new object (so a view can tell it changed by identity).
  updateLocal(rec, clientId, changes) {
    const now = rec.thread && rec.thread.pending.get(clientId);
    if (!now) return null;
    const next = { ...now, ...changes };
    rec.thread.pending.set(clientId, next);
    this.emit('message', { conversationId: rec.id, message: next, replaces: null, previous: now });
    return next;
  }

  /** Edits your message (optimistically; rejects and puts it back when refused). */
  async edit(id, messageId, content) {
    const rec = this.records.get(id);
    const message = rec && rec.thread && rec.thread.messages.get(messageId);
    if (!message) throw new Error('Confab: unknown message');
    const text = String(content);
    if (codePoints(text) > MAX_CONTENT) throw new RangeError('Confab: the message is too long.');
    this.upsert(rec, { ...message, content: text, edited_at: new Date().toISOString() });
    try {
      const saved = await this.api.edit(id, messageId, text);
      const now = rec.thread.messages.get(messageId);
      this.upsert(rec, { ...withAttachmentUrls(saved, now.attachments), reactions: now.reactions });
    } catch (error) {
      this.upsert(rec, message);
      throw error;
    }
  }

  async remove(id, messageId) {
    const rec = this.records.get(id);
    await this.api.remove(id, messageId);
    const message = rec && rec.thread && rec.thread.messages.get(messageId);
    if (message) this.upsert(rec, { ...message, content: '', attachments: [], deleted: true });
  }

  /** Adds your reaction, or takes it back if you had it (optimistically). */
  async toggleReaction(id, messageId, emoji) {
    const rec = this.records.get(id);
    const message = rec && rec.thread && rec.thread.messages.get(messageId);
    if (!message) return;
    const had = Boolean(message.reactions && message.reactions[emoji] && message.reactions[emoji].me);
    this.react(rec, message, emoji, this.user.id, !had);
    try {
      if (had) await this.api.unreact(id, messageId, emoji);
      else await this.api.react(id, messageId, emoji);
    } catch (error) {
      const now = rec.thread.messages.get(messageId);
      if (now) this.react(rec, now, emoji, this.user.id, had);
      throw error;
    }
  }

  /** Pins or unpins a message; the message's message.updated shows it to everyone. */
  async pin(id, messageId, pinned) {
    await this.api.pin(id, messageId, pinned);
  }

  report(messageId, reason) {
    return this.api.report(messageId, reason);
  }

  // -- read marks ----------------------------------------------------------------------------

  /** Marks everything up to `seq` read (call it when that message has been seen). */
  async markRead(id, seq) {
    const rec = this.records.get(id);
    if (!rec || !Number.isInteger(seq) || seq <= this.readSeq(rec, this.user.id)) return;
    rec.readSent = seq;
    this.countUnread(rec);
    this.emit('conversation', { conversationId: id });
    try {
      await this.api.read(id, seq);
    } catch {
      rec.readSent = 0; // sent again on the next message or visit
    }
  }

  // -- typing --------------------------------------------------------------------------------

  /** Call on each keystroke in a conversation: tells the others, at most every 2.5 s, and
   *  that you stopped after 4 s without one. */
  typing(id) {
    const sent = this.typingSent;
    clearTimeout(sent.idle);
    const now = Date.now();
    if (sent.id !== id || now - sent.at > TYPING_SEND_EVERY_MS) {
      if (sent.id && sent.id !== id) this.stopTypingSignal(sent.id);
      sent.id = id;
      sent.at = now;
      this.api.typing(id, true).catch(() => {});
    }
    sent.idle = setTimeout(() => this.stopTypingSignal(id), TYPING_IDLE_MS);
  }

  /** You stopped typing (sent, cleared, left). */
  stopTypingSignal(id) {
    const sent = this.typingSent;
    if (sent.id !== id) return;
    clearTimeout(sent.idle);
    sent.id = null;
    sent.at = 0;
    this.api.typing(id, false).catch(() => {});
  }

  /** Who is typing in a conversation now: [{id, name}]. */
  typingUsers(id) {
    const rec = this.records.get(id);
    return rec ? [...rec.typing.entries()].map(([userId, t]) => ({ id: userId, name: t.name })) : [];
  }

  onTyping(rec, data) {
    if (!data.user_id || data.user_id === this.user.id) return;
    if (!data.is_typing) return this.stopTyping(rec, data.user_id);
    const previous = rec.typing.get(data.user_id);
    if (previous) clearTimeout(previous.timer);
    const known = (rec.conv.participants || []).find((p) => p.id === data.user_id);
    rec.typing.set(data.user_id, {
      name: data.name || (known && known.name) || '',
      timer: setTimeout(() => this.stopTyping(rec, data.user_id), TYPING_SHOWN_MS),
    });
    this.emit('typing', { conversationId: rec.id, users: this.typingUsers(rec.id) });
  }

  stopTyping(rec, userId) {
    const entry = rec.typing.get(userId);
    if (!entry) return;
    clearTimeout(entry.timer);
    rec.typing.delete(userId);
    this.emit('typing', { conversationId: rec.id, users: this.typingUsers(rec.id) });
  }

  // -- presence ------------------------------------------------------------------------------

  /** Follow who is online in a conversation ('presence' events); stop with unwatchPresence. */
  watchPresence(id) {
    const rec = this.records.get(id);
    if (!rec || rec.presence) return;
    rec.presence = true;
    if (this.realtime) this.realtime.subscribe(`presence-conversation.${id}`);
  }

  unwatchPresence(id) {
    const rec = this.records.get(id);
    if (!rec || !rec.presence) return;
    rec.presence = false;
    rec.members = null;
    if (this.realtime) this.realtime.unsubscribe(`presence-conversation.${id}`);
  }

  /** Who is online in a watched conversation, or null until known. */
  members(id) {
    const rec = this.records.get(id);
    return rec ? rec.members : null;
  }

  // -- attachments ---------------------------------------------------------------------------

  /** Uploads a file to a conversation; resolves to the attachment to send with send(). */
  async upload(id, file) {
    return withExpiry(await this.api.upload(id, file));
  }

  /** An attachment with fresh URLs (they are per reader and expire): ask whenever a file
   *  is opened. Has `expiresAt` (ms) too. A failed ask is made again, a second and then
   *  three seconds later (not after a 401 or 403, nor once stopped): the attachment may
   *  be newer than what the server's read model shows yet (a link preview's image,
   *  stored a moment before the message that shows it), or one request may be lost. */
  async attachment(attachmentId) {
    for (let tries = 0; ; tries += 1) {
      try {
        return withExpiry(await this.api.attachment(attachmentId));
      } catch (error) {
        const final = error.status === 401 || error.status === 403;
        if (final || this.stopped || tries >= ATTACHMENT_RETRY_WAITS_MS.length) throw error;
        await new Promise((resolve) => setTimeout(resolve, ATTACHMENT_RETRY_WAITS_MS[tries]));
      }
    }
  }
}

/** When a presigned URL fetched at `fetchedAt` (this browser's clock) stops working: its
 *  lifetime (X-Amz-Expires, or SigV2's Expires) counted from then, so a visitor's clock
 *  that is wrong does not matter. Infinity for an unsigned URL, 0 for none. */
export function urlExpiry(url, fetchedAt = Date.now()) {
  if (typeof url !== 'string' || !url) return 0;
  try {
    const params = new URL(url).searchParams;
    const lifetime = Number(params.get('X-Amz-Expires'));
    if (lifetime > 0) return fetchedAt + lifetime * 1000;
    const signed = params.has('X-Amz-Signature') || params.has('Signature');
    return signed ? fetchedAt + URL_FALLBACK_MS : Infinity;
  } catch {
    return 0;
  }
}

/** The attachment with `expiresAt` (ms, this browser's clock): when its URLs stop working. */
function withExpiry(attachment, now = Date.now()) {
  const urls = [attachment.url, attachment.thumbnail_url].filter(Boolean);
  const times = urls.map((u) => urlExpiry(u, now));
  return { ...attachment, expiresAt: times.length ? Math.min(...times) : 0 };
}

// Messages from REST carry URLs fetched just now: note when they expire.
function stamped(message) {
  const files = message.attachments;
  if (!files || !files.length || files.every((a) => !a.url || a.expiresAt)) return message;
  const now = Date.now();
  return { ...message, attachments: files.map((a) => (a.url && !a.expiresAt ? withExpiry(a, now) : a)) };
}

function withAttachmentUrls(message, known) {
  if (!message.attachments || !known || !known.length) return message;
  return {
    ...message,
    attachments: message.attachments.map((a) => {
      const had = known.find((b) => b.id === a.id);
      return had && !a.url ? { ...had, ...a, url: had.url, thumbnail_url: had.thumbnail_url } : a;
    }),
  };
}

// A conversation made a moment ago (by the tenant's backend, through another gateway)
// may not be readable yet: "not found" and "unavailable" are tried again, briefly.
async function settled(call) {
  for (let attempt = 0; ; attempt += 1) {
    try {
      return await call();
    } catch (error) {
      if (attempt >= 4 || (error.status !== 404 && error.status !== 503)) throw error;
      await new Promise((resolve) => setTimeout(resolve, 250 * 2 ** attempt));
    }
  }
}

// `people` with each one's last_read_seq raised to what `seen` says, if more.
function mergePeople(people, seen) {
  const reads = new Map((seen || []).map((p) => [p.id, p.last_read_seq || 0]));
  return (people || []).map((p) => {
    const read = Math.max(p.last_read_seq || 0, reads.get(p.id) || 0);
    return read === (p.last_read_seq || 0) ? p : { ...p, last_read_seq: read };
  });
}

function toTime(value) {
  if (value === undefined || value === null || value === '') return null;
  const time = typeof value === 'number' ? value : new Date(value).getTime();
  return Number.isFinite(time) ? time : null;
}

/** Characters as the server counts them (code points, not UTF-16 units). */
export function codePoints(text) {
  let count = 0;
  for (const _ of text) count += 1;
  return count;
}

// An id for client_msg_id that works on plain-http pages too (randomUUID needs a secure context).
export function randomId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}
