// The Confab chat widget: a launcher and a panel (or an inline panel in a container),
// in a shadow root so the host page's styles and ours never mix.
//
//   import { mount } from '<gateway>/widget/v1/widget.js';
//   const chat = mount({ token: 'st_…' });   // see confab-widget.js for the script-tag way
//
// Everything a user or a server wrote reaches the page as text nodes (dom.js): message
// content, names, file names. URLs from the server pass safeUrl (http, https, blob only).

import { Api } from './api.js';
import { clear, formatSize, formatTime, h, icon, randomId, safeUrl } from './dom.js';
import { EMOJI, emojiName } from './emoji.js';
import { Feed, loadPusher, Realtime } from './realtime.js';

const BASE = new URL('./', import.meta.url).href;
const TYPING_SHOWN_MS = 6000; // a typing indicator nobody refreshes goes away
const TYPING_SEND_EVERY_MS = 2500;
const TYPING_IDLE_MS = 4000;
const POLL_MS = 3000; // without a socket: the open conversation's events, by REST
const REPORT_REASONS = ['Spam', 'Harassment or abuse', 'Inappropriate content', 'Something else'];
const CONNECTION_TEXT = {
  connecting: 'Connecting…',
  live: 'Connected',
  reconnecting: 'Reconnecting…',
  offline: 'Offline',
  unavailable: 'Live updates unavailable',
};

export function mount(options) {
  const widget = new Widget(options || {});
  widget.start();
  return {
    open: () => widget.setOpen(true),
    close: () => widget.setOpen(false),
    openConversation: (id) => widget.openConversation(id),
    destroy: () => widget.destroy(),
    get state() {
      return widget.connection;
    },
  };
}

class Widget {
  constructor(options) {
    if (!options.token) throw new Error('Confab widget: a session token is required');
    this.options = options;
    this.inline = Boolean(options.container);
    this.api = new Api(options.apiUrl || new URL('../../', BASE).href, options.token);
    this.me = null;
    this.convs = new Map();
    this.order = [];
    this.view = 'list';
    this.current = null;
    this.isOpen = this.inline || Boolean(options.open);
    this.realtime = null;
    this.realtimeBroken = false;
    this.offline = !navigator.onLine;
    this.everConnected = false;
    this.connection = 'connecting';
    this.picker = null;
    this.editing = null;
    this.reporting = null;
    this.uploads = [];
    this.typingSentAt = 0;
    this.listRefresh = null;
    this.cleanups = [];
  }

  // -- start and stop ------------------------------------------------------------------

  async start() {
    this.buildShell();
    this.listen(window, 'online', () => this.onNetwork(true));
    this.listen(window, 'offline', () => this.onNetwork(false));
    this.listen(document, 'visibilitychange', () => this.readIfReading());
    this.poller = setInterval(() => this.poll(), POLL_MS);
    try {
      this.me = await this.api.me();
    } catch (error) {
      this.fatal(`Chat could not start: ${error.message}`);
      return;
    }
    await this.refreshList();
    this.connect();
    if (this.options.conversationId) await this.openConversation(this.options.conversationId);
    else this.render();
  }

  destroy() {
    clearInterval(this.poller);
    for (const undo of this.cleanups) undo();
    for (const rec of this.convs.values()) rec.feed.stop();
    if (this.realtime) this.realtime.pusher.disconnect();
    this.host.remove();
  }

  listen(target, name, handler) {
    target.addEventListener(name, handler);
    this.cleanups.push(() => target.removeEventListener(name, handler));
  }

  fatal(message) {
    clear(this.body);
    this.body.append(h('p', { class: 'cw-empty', role: 'alert', text: message }));
  }

  // -- the shell: launcher, panel, lightbox ------------------------------------------------

  buildShell() {
    this.host = h('div', { class: 'confab-widget' });
    const root = this.host.attachShadow({ mode: 'open' });
    const style = h('link', { rel: 'stylesheet', href: BASE + 'widget.css' });
    this.el = h('div', { class: 'cw', dataset: { mode: this.inline ? 'inline' : 'floating' } });
    this.el.hidden = true; // until the stylesheet is in, so nothing flashes unstyled
    const show = () => {
      this.el.hidden = false;
    };
    style.addEventListener('load', show);
    style.addEventListener('error', show);
    if (this.options.color) this.el.style.setProperty('--cw-accent', this.options.color);
    root.append(style, this.el);

    this.backButton = h(
      'button',
      {
        class: 'cw-icon-button',
        type: 'button',
        'aria-label': 'Back to conversations',
        onclick: () => this.showList(),
      },
      icon('back'),
    );
    this.title = h('h2', { class: 'cw-title', id: 'cw-title', text: 'Conversations' });
    this.status = h('span', {
      class: 'cw-connection',
      role: 'status',
      'data-testid': 'connection',
      dataset: { state: 'connecting' },
      text: CONNECTION_TEXT.connecting,
    });
    const closeButton = this.inline
      ? null
      : h(
          'button',
          {
            class: 'cw-icon-button',
            type: 'button',
            'aria-label': 'Close chat',
            onclick: () => this.setOpen(false),
          },
          icon('close'),
        );
    this.body = h('div', { class: 'cw-body' });
    this.panel = h(
      'section',
      {
        class: 'cw-panel',
        id: 'cw-panel',
        role: this.inline ? 'region' : 'dialog',
        'aria-labelledby': 'cw-title',
        hidden: !this.isOpen,
        onkeydown: (event) => this.onPanelKey(event),
      },
      h(
        'header',
        { class: 'cw-header' },
        this.backButton,
        h('div', { class: 'cw-heading' }, this.title, this.status),
        closeButton,
      ),
      this.body,
      h(
        'footer',
        { class: 'cw-powered' },
        h('span', { class: 'cw-dot', 'aria-hidden': 'true' }),
        'Powered by ',
        h('strong', { text: 'Confab' }),
      ),
    );
    if (!this.inline) {
      this.launcherBadge = h('span', { class: 'cw-badge', 'data-testid': 'unread', hidden: true });
      this.launcher = h(
        'button',
        {
          class: 'cw-launcher',
          type: 'button',
          'data-testid': 'launcher',
          'aria-label': 'Chat',
          'aria-controls': 'cw-panel',
          'aria-expanded': String(this.isOpen),
          onclick: () => this.setOpen(!this.isOpen),
        },
        icon('chat', 26),
        this.launcherBadge,
      );
      this.el.append(this.launcher);
    }
    this.lightboxImage = h('img', { class: 'cw-lightbox-image', alt: '' });
    this.lightboxCaption = h('p', { class: 'cw-lightbox-caption' });
    this.lightboxClose = h(
      'button',
      {
        class: 'cw-icon-button cw-lightbox-close',
        type: 'button',
        'aria-label': 'Close image',
        onclick: () => this.closeLightbox(),
      },
      icon('close'),
    );
    this.lightbox = h(
      'div',
      {
        class: 'cw-lightbox',
        role: 'dialog',
        'aria-modal': 'true',
        'aria-label': 'Image',
        'data-testid': 'lightbox',
        hidden: true,
        onclick: (event) => {
          if (event.target === this.lightbox) this.closeLightbox();
        },
        onkeydown: (event) => {
          if (event.key === 'Escape' || event.key === 'Tab') {
            event.preventDefault();
            if (event.key === 'Escape') this.closeLightbox();
          }
        },
      },
      h('figure', {}, this.lightboxImage, this.lightboxCaption),
      this.lightboxClose,
    );
    this.el.append(this.panel, this.lightbox);
    (this.options.container || document.body).append(this.host);
    this.body.append(h('p', { class: 'cw-empty', text: 'Loading…' }));
  }

  setOpen(open) {
    if (this.inline) return;
    this.isOpen = open;
    this.panel.hidden = !open;
    this.launcher.setAttribute('aria-expanded', String(open));
    if (open) {
      this.render();
      this.focusDefault();
      this.readIfReading();
    } else {
      this.closePicker();
      this.launcher.focus();
    }
  }

  focusDefault() {
    const target =
      this.view === 'thread'
        ? this.body.querySelector('[data-testid="composer"]')
        : this.body.querySelector('.cw-conversation');
    if (target) target.focus();
  }

  onPanelKey(event) {
    if (event.key === 'Escape' && !event.defaultPrevented) {
      if (this.picker) return this.closePicker(true);
      if (!this.inline) {
        event.preventDefault();
        this.setOpen(false);
      }
    }
  }

  // -- the connection ------------------------------------------------------------------

  async connect() {
    let Pusher;
    try {
      Pusher = await loadPusher(BASE);
    } catch {
      this.realtimeBroken = true;
      this.updateConnection();
      return;
    }
    this.realtime = new Realtime(
      Pusher,
      {
        appKey: this.me.app_key,
        websocketUrl: this.me.websocket_url,
        authEndpoint: this.api.base + '/api/widget/broadcasting/auth',
        token: this.api.token,
      },
      {
        state: (state) => {
          if (state === 'connected') this.everConnected = true;
          this.updateConnection();
        },
        event: (channel, name, data) => this.onLiveEvent(channel, name, data),
        subscribed: (channel) => this.onSubscribed(channel),
        failed: () => this.updateConnection(),
      },
    );
    if (this.offline) this.realtime.disconnect();
    this.realtime.subscribe(`private-user.${this.me.user.id}`);
    for (const id of this.convs.keys()) this.realtime.subscribe(`private-conversation.${id}`);
    this.updateConnection();
  }

  onNetwork(online) {
    this.offline = !online;
    if (this.realtime) {
      if (online) this.realtime.connect();
      else this.realtime.disconnect();
    }
    this.updateConnection();
    if (online) {
      for (const rec of this.convs.values()) {
        for (const pending of rec.thread ? rec.thread.pending.values() : []) {
          if (pending.state === 'queued') this.deliver(rec, pending);
        }
      }
      if (!this.live()) this.poll(true);
    }
  }

  live() {
    return this.connection === 'live';
  }

  updateConnection() {
    let state;
    const rt = this.realtime;
    if (this.offline) state = 'offline';
    else if (this.realtimeBroken) state = 'unavailable';
    else if (!rt) state = 'connecting';
    else if (rt.state === 'connected') state = rt.failedChannels.size ? 'unavailable' : 'live';
    else if (rt.state === 'failed') state = 'unavailable';
    else state = this.everConnected ? 'reconnecting' : 'connecting';
    this.connection = state;
    this.status.dataset.state = state;
    this.status.textContent = CONNECTION_TEXT[state];
  }

  // Without live events (no socket, or the channel refused): the open conversation by REST.
  poll(now = false) {
    if (this.offline || this.live() || !this.me) return;
    if (!now && this.connection === 'connecting') return;
    const rec = this.current && this.convs.get(this.current);
    if (rec && rec.thread && rec.thread.loaded) rec.feed.catchUp();
    this.pollTick = (this.pollTick || 0) + 1;
    if (now || this.pollTick % 5 === 0) this.scheduleListRefresh();
  }

  onSubscribed(channel) {
    this.updateConnection();
    const id = channel.startsWith('private-conversation.') ? channel.slice(21) : null;
    const rec = id && this.convs.get(id);
    // Subscribed (again): what happened while we were not is fetched by seq.
    if (rec && rec.thread && rec.thread.loaded) rec.feed.catchUp();
    else this.scheduleListRefresh();
  }

  onLiveEvent(channel, name, data) {
    if (!data || typeof data !== 'object') return;
    if (channel.startsWith('private-user.')) {
      if (name === 'conversation.created') this.scheduleListRefresh();
      return;
    }
    const rec = this.convs.get(channel.slice(21));
    if (!rec) return;
    if (name === 'user.typing') return this.onTyping(rec, data);
    const seq = Number.isInteger(data.event_seq) ? data.event_seq : null;
    if (seq === null) this.apply(rec, name, data);
    else rec.feed.push(seq, name, data);
  }

  // -- conversations -----------------------------------------------------------------------

  record(conv) {
    let rec = this.convs.get(conv.id);
    if (!rec) {
      rec = {
        id: conv.id,
        conv,
        unread: conv.unread_count || 0,
        thread: null,
        typing: new Map(),
        readSent: 0,
      };
      rec.feed = new Feed(
        (after) => this.api.events(rec.id, after),
        (name, data) => this.apply(rec, name, data),
      );
      rec.feed.start(conv.last_seq || 0);
      this.convs.set(conv.id, rec);
      if (this.realtime) this.realtime.subscribe(`private-conversation.${conv.id}`);
    }
    return rec;
  }

  async refreshList() {
    let page;
    try {
      page = await this.api.conversations();
    } catch (error) {
      if (!this.convs.size) this.fatal(`Conversations could not be loaded: ${error.message}`);
      return;
    }
    for (const conv of page.data) {
      const known = this.convs.has(conv.id);
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
      if (this.isReading(rec)) rec.unread = 0;
    }
    this.sortList();
    this.render();
  }

  scheduleListRefresh() {
    clearTimeout(this.listRefresh);
    this.listRefresh = setTimeout(() => this.refreshList(), 300);
  }

  sortList() {
    this.order = [...this.convs.values()]
      .sort((a, b) => String(b.conv.last_activity_at).localeCompare(String(a.conv.last_activity_at)))
      .map((rec) => rec.id);
  }

  titleOf(rec) {
    if (rec.conv.title) return rec.conv.title;
    const others = (rec.conv.participants || []).filter((p) => p.id !== this.me.user.id);
    return others.map((p) => p.name).join(', ') || 'Conversation';
  }

  nameOf(rec, userId) {
    if (userId === this.me.user.id) return 'You';
    const found = (rec.conv.participants || []).find((p) => p.id === userId);
    return found ? found.name : 'Someone';
  }

  isReading(rec) {
    return (
      this.isOpen &&
      this.view === 'thread' &&
      this.current === rec.id &&
      document.visibilityState === 'visible' &&
      Boolean(rec.thread && rec.thread.loaded)
    );
  }

  // -- applying events (live, or from the backlog), each once, in seq order ----------------

  apply(rec, name, data) {
    const thread = rec.thread;
    const mine = this.me.user.id;
    switch (name) {
      case 'message.created': {
        const senderId = data.sender ? data.sender.id : null;
        rec.conv = { ...rec.conv, last_message: data, last_activity_at: data.created_at };
        if (senderId) this.stopTyping(rec, senderId);
        if (senderId !== mine && !data.deleted) {
          if (this.isReading(rec)) this.scheduleRead(rec);
          else rec.unread += 1;
        }
        if (thread) this.upsert(rec, data, true);
        this.sortList();
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
        const myRead = this.readSeq(rec, mine);
        if (author && author.id !== mine && data.seq > myRead && rec.unread > 0) rec.unread -= 1;
        if (message) {
          this.upsert(rec, { ...message, content: '', attachments: [], deleted: true });
        }
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
        const reader = { id: data.user_id, name: 'Someone', last_read_seq: data.seq };
        rec.conv = {
          ...rec.conv,
          participants: mergePeople(rec.conv.participants, known ? [reader] : []),
        };
        if (!known) {
          rec.conv.participants.push(reader);
          this.scheduleListRefresh(); // a new participant: their name comes with the list
        }
        if (data.user_id === mine) {
          const last = rec.conv.last_message;
          if (!last || data.seq >= last.seq) rec.unread = 0;
        }
        if (thread) this.renderReceipt(rec);
        break;
      }
      case 'participant.added':
      case 'participant.removed':
        this.scheduleListRefresh();
        break;
      default:
        break;
    }
    this.renderList();
    this.updateBadge();
  }

  readSeq(rec, userId) {
    const found = (rec.conv.participants || []).find((p) => p.id === userId);
    return Math.max(found ? found.last_read_seq || 0 : 0, userId === this.me.user.id ? rec.readSent : 0);
  }

  // Reactions: events name the user, so our own (already shown at the click) are not
  // counted twice.
  react(rec, message, emoji, userId, add) {
    const reactions = { ...(message.reactions || {}) };
    const current = reactions[emoji] || { count: 0, me: false };
    const mine = userId === this.me.user.id;
    if (mine && current.me === add) return;
    const count = Math.max(0, current.count + (add ? 1 : -1));
    if (count === 0) delete reactions[emoji];
    else reactions[emoji] = { count, me: mine ? add : current.me };
    this.upsert(rec, { ...message, reactions });
  }

  // -- typing ----------------------------------------------------------------------------

  onTyping(rec, data) {
    if (!data.user_id || data.user_id === this.me.user.id) return;
    if (!data.is_typing) return this.stopTyping(rec, data.user_id);
    const previous = rec.typing.get(data.user_id);
    if (previous) clearTimeout(previous.timer);
    rec.typing.set(data.user_id, {
      name: data.name || this.nameOf(rec, data.user_id),
      timer: setTimeout(() => this.stopTyping(rec, data.user_id), TYPING_SHOWN_MS),
    });
    this.renderTyping(rec);
  }

  stopTyping(rec, userId) {
    const entry = rec.typing.get(userId);
    if (!entry) return;
    clearTimeout(entry.timer);
    rec.typing.delete(userId);
    this.renderTyping(rec);
  }

  sendTyping(rec, typing) {
    clearTimeout(this.typingIdle);
    const now = Date.now();
    if (typing) {
      if (now - this.typingSentAt > TYPING_SEND_EVERY_MS) {
        this.typingSentAt = now;
        this.api.typing(rec.id, true).catch(() => {});
      }
      this.typingIdle = setTimeout(() => this.sendTyping(rec, false), TYPING_IDLE_MS);
    } else if (this.typingSentAt) {
      this.typingSentAt = 0;
      this.api.typing(rec.id, false).catch(() => {});
    }
  }

  // -- the thread ------------------------------------------------------------------------

  showList() {
    this.closePicker();
    this.view = 'list';
    this.current = null;
    this.render();
    this.focusDefault();
  }

  async openConversation(id) {
    this.closePicker();
    let rec = this.convs.get(id);
    if (!rec) {
      try {
        const snapshot = await settled(() => this.api.conversation(id));
        rec = this.record(snapshot.conversation);
        this.sortList();
      } catch (error) {
        this.fatal(`This conversation could not be opened: ${error.message}`);
        return;
      }
    }
    this.view = 'thread';
    this.current = id;
    this.editing = null;
    this.reporting = null;
    this.render();
    if (!rec.thread) await this.loadThread(rec);
    if (this.current === id) {
      this.readIfReading();
      this.focusDefault();
    }
  }

  async loadThread(rec) {
    rec.thread = {
      messages: new Map(),
      pending: new Map(),
      elements: new Map(),
      hasMore: false,
      loaded: false,
      loadingOlder: false,
    };
    const before = rec.feed.cursor;
    rec.feed.cursor = null; // live events wait for the snapshot
    let snapshot;
    try {
      snapshot = await settled(() => this.api.conversation(rec.id));
    } catch (error) {
      rec.thread = null;
      rec.feed.start(before);
      if (this.current === rec.id) this.fatal(`Messages could not be loaded: ${error.message}`);
      return;
    }
    rec.conv = { ...rec.conv, ...snapshot.conversation };
    for (const message of snapshot.messages) rec.thread.messages.set(message.id, message);
    rec.thread.hasMore = snapshot.has_more;
    rec.thread.loaded = true;
    const cursor = snapshot.conversation.last_seq || 0;
    rec.feed.start(cursor);
    if (before !== null && cursor < before) rec.feed.catchUp();
    if (this.current === rec.id) this.renderThread(rec, true);
  }

  async loadOlder(rec) {
    const thread = rec.thread;
    if (!thread || !thread.hasMore || thread.loadingOlder) return;
    const seqs = [...thread.messages.values()].map((m) => m.seq);
    const oldest = seqs.length ? Math.min(...seqs) : undefined;
    thread.loadingOlder = true;
    this.renderHistoryControl(rec);
    try {
      const page = await this.api.messages(rec.id, { before: oldest, limit: 30 });
      const list = this.messagesEl;
      const fromBottom = list.scrollHeight - list.scrollTop;
      for (const message of page.data) {
        if (!thread.messages.has(message.id)) {
          thread.messages.set(message.id, message);
          this.place(rec, message);
        }
      }
      thread.hasMore = page.has_more;
      list.scrollTop = list.scrollHeight - fromBottom; // stay where the reader was
    } catch {
      // The button stays; scrolling up again retries.
    } finally {
      thread.loadingOlder = false;
      this.renderHistoryControl(rec);
    }
  }

  readIfReading() {
    const rec = this.current && this.convs.get(this.current);
    if (rec && this.isReading(rec)) this.scheduleRead(rec);
  }

  scheduleRead(rec) {
    rec.unread = 0;
    this.updateBadge();
    this.renderList();
    clearTimeout(rec.readTimer);
    rec.readTimer = setTimeout(() => this.sendRead(rec), 150);
  }

  async sendRead(rec) {
    const seqs = [...rec.thread.messages.values()].map((m) => m.seq);
    const latest = Math.max(0, ...seqs);
    if (latest <= rec.readSent || latest <= this.readSeq(rec, this.me.user.id)) return;
    rec.readSent = latest;
    try {
      await this.api.read(rec.id, latest);
    } catch {
      rec.readSent = 0; // sent again on the next message or visit
    }
  }

  // Adds or replaces a message. Payloads of live events say `me: false` for every
  // reaction (they are the same for every reader): our own marks are kept.
  upsert(rec, message, fromEvent = false) {
    const thread = rec.thread;
    const existing = thread.messages.get(message.id);
    let merged = message;
    if (existing) {
      merged = { ...existing, ...message };
      if (fromEvent && message.reactions) {
        const reactions = {};
        for (const [emoji, summary] of Object.entries(message.reactions)) {
          const had = existing.reactions && existing.reactions[emoji];
          reactions[emoji] = { count: summary.count, me: Boolean(had && had.me) };
        }
        merged.reactions = reactions;
      }
      if (message.sender && !message.sender.name && existing.sender) merged.sender = existing.sender;
    }
    if (
      merged.client_msg_id &&
      merged.sender &&
      merged.sender.id === this.me.user.id &&
      thread.pending.has(merged.client_msg_id)
    ) {
      this.dropPending(rec, merged.client_msg_id);
    }
    thread.messages.set(merged.id, merged);
    if (this.current === rec.id && this.messagesEl) {
      const stick = this.atBottom();
      this.place(rec, merged);
      this.renderReceipt(rec);
      if (stick) this.scrollToBottom();
    }
  }

  dropPending(rec, clientId) {
    const pending = rec.thread.pending.get(clientId);
    rec.thread.pending.delete(clientId);
    const key = `pending:${clientId}`;
    const el = rec.thread.elements.get(key);
    if (el) el.remove();
    rec.thread.elements.delete(key);
    for (const upload of (pending && pending.uploads) || []) {
      if (upload.preview) URL.revokeObjectURL(upload.preview);
    }
  }

  // -- sending -----------------------------------------------------------------------------

  async submit(rec) {
    const text = this.composer.value.trim();
    if (this.uploads.some((u) => u.state === 'uploading')) {
      this.composerNote('Wait for the upload to finish.');
      return;
    }
    const uploads = this.uploads.filter((u) => u.state === 'done');
    if (!text && !uploads.length) return;
    if (text.length > 10000) {
      this.composerNote('A message can have at most 10,000 characters.');
      return;
    }
    const pending = {
      client_msg_id: randomId(),
      content: text || uploads.map((u) => u.attachment.filename).join(', '),
      onlyAttachments: !text,
      uploads,
      state: 'sending',
      created_at: new Date().toISOString(),
    };
    rec.thread.pending.set(pending.client_msg_id, pending);
    this.composer.value = '';
    this.autosize();
    this.uploads = [];
    this.renderUploads();
    this.composerNote('');
    this.sendTyping(rec, false);
    this.placePending(rec, pending);
    this.scrollToBottom();
    await this.deliver(rec, pending);
  }

  async deliver(rec, pending) {
    pending.state = 'sending';
    this.placePending(rec, pending);
    const body = { content: pending.content, client_msg_id: pending.client_msg_id };
    if (pending.uploads.length) body.attachment_ids = pending.uploads.map((u) => u.attachment.id);
    if (pending.onlyAttachments) body.metadata = { confab_widget: { attachments_only: true } };
    try {
      const message = await this.api.send(rec.id, body);
      if (rec.thread.pending.has(pending.client_msg_id)) this.upsert(rec, message);
    } catch (error) {
      if (!rec.thread.pending.has(pending.client_msg_id)) return;
      pending.state = error.offline ? 'queued' : 'failed';
      pending.error = error.offline ? 'Waiting for the network…' : error.message;
      this.placePending(rec, pending);
    }
  }

  composerNote(text) {
    if (this.note) this.note.textContent = text;
  }

  // -- attachments -----------------------------------------------------------------------------

  async addFiles(rec, files) {
    for (const file of files) {
      const upload = {
        key: randomId(),
        name: file.name,
        state: 'uploading',
        preview: file.type.startsWith('image/') ? URL.createObjectURL(file) : null,
      };
      this.uploads.push(upload);
      this.renderUploads();
      try {
        upload.attachment = await this.api.upload(rec.id, file);
        upload.state = 'done';
      } catch (error) {
        upload.state = 'failed';
        upload.error =
          error.status === 404 || error.status === 405
            ? 'Attachments are not available on this server.'
            : error.message;
      }
      this.renderUploads();
    }
  }

  removeUpload(key) {
    const upload = this.uploads.find((u) => u.key === key);
    if (upload && upload.preview) URL.revokeObjectURL(upload.preview);
    this.uploads = this.uploads.filter((u) => u.key !== key);
    this.renderUploads();
    this.composer.focus();
  }

  openLightbox(attachment, trigger) {
    const url = safeUrl(attachment.url);
    if (!url) return;
    this.lightboxReturn = trigger;
    this.lightboxImage.src = url;
    this.lightboxImage.alt = attachment.filename;
    this.lightboxCaption.textContent = attachment.filename;
    this.lightbox.hidden = false;
    this.lightboxClose.focus();
  }

  closeLightbox() {
    this.lightbox.hidden = true;
    this.lightboxImage.removeAttribute('src');
    if (this.lightboxReturn) this.lightboxReturn.focus();
  }

  // -- actions on a message --------------------------------------------------------------------

  async toggleReaction(rec, message, emoji) {
    const had = message.reactions && message.reactions[emoji] && message.reactions[emoji].me;
    this.react(rec, message, emoji, this.me.user.id, !had);
    try {
      if (had) await this.api.unreact(rec.id, message.id, emoji);
      else await this.api.react(rec.id, message.id, emoji);
    } catch (error) {
      const now = rec.thread.messages.get(message.id);
      if (now) this.react(rec, now, emoji, this.me.user.id, Boolean(had));
      this.composerNote(`The reaction was not saved: ${error.message}`);
    }
  }

  async saveEdit(rec, message, content) {
    const text = content.trim();
    this.editing = null;
    if (!text || text === message.content) {
      this.place(rec, message);
      return;
    }
    this.upsert(rec, { ...message, content: text, edited_at: new Date().toISOString() });
    try {
      const saved = await this.api.edit(rec.id, message.id, text);
      this.upsert(rec, { ...saved, reactions: rec.thread.messages.get(message.id).reactions });
    } catch (error) {
      this.upsert(rec, message);
      this.composerNote(`The edit was not saved: ${error.message}`);
    }
  }

  async deleteMessage(rec, message) {
    try {
      await this.api.remove(rec.id, message.id);
      this.upsert(rec, { ...message, content: '', attachments: [], deleted: true });
      this.composer.focus();
    } catch (error) {
      this.composerNote(`The message was not deleted: ${error.message}`);
    }
  }

  async sendReport(rec, message, reason, form) {
    const status = form.querySelector('.cw-report-status');
    try {
      await this.api.report(message.id, reason);
      this.reporting = null;
      message.reported = true;
      this.place(rec, message);
      const el = rec.thread.elements.get(message.id);
      const button = el && el.querySelector('.cw-reported');
      if (button) button.focus();
    } catch (error) {
      status.textContent = `Not sent: ${error.message}`;
    }
  }

  // -- the emoji picker ---------------------------------------------------------------------------

  openPicker(rec, message, trigger) {
    this.closePicker();
    const buttons = EMOJI.map(([emoji, name]) =>
      h('button', {
        class: 'cw-emoji',
        type: 'button',
        role: 'menuitem',
        'aria-label': name,
        title: name,
        text: emoji,
        onclick: () => {
          this.closePicker(true);
          const now = rec.thread.messages.get(message.id);
          if (now) this.toggleReaction(rec, now, emoji);
        },
      }),
    );
    const picker = h(
      'div',
      {
        class: 'cw-picker',
        role: 'menu',
        'aria-label': 'Choose a reaction',
        'data-testid': 'emoji-picker',
        onkeydown: (event) => {
          const index = buttons.indexOf(event.target);
          const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: 6, ArrowUp: -6 }[event.key];
          if (step && index >= 0) {
            event.preventDefault();
            buttons[(index + step + buttons.length) % buttons.length].focus();
          } else if (event.key === 'Escape') {
            event.preventDefault();
            this.closePicker(true);
          } else if (event.key === 'Tab') {
            event.preventDefault();
            this.closePicker(true);
          }
        },
      },
      buttons,
    );
    this.picker = { el: picker, trigger };
    const box = this.panel.getBoundingClientRect();
    const at = trigger.getBoundingClientRect();
    this.panel.append(picker);
    const width = picker.offsetWidth;
    const height = picker.offsetHeight;
    const left = Math.max(8, Math.min(at.right - box.left - width, box.width - width - 8));
    const above = at.top - box.top - height - 6;
    picker.style.left = `${left}px`;
    picker.style.top = `${above > 8 ? above : at.bottom - box.top + 6}px`;
    buttons[0].focus();
    this.pickerOutside = (event) => {
      if (!event.composedPath().includes(picker) && !event.composedPath().includes(trigger)) {
        this.closePicker();
      }
    };
    document.addEventListener('pointerdown', this.pickerOutside, true);
  }

  closePicker(returnFocus = false) {
    if (!this.picker) return;
    const { el, trigger } = this.picker;
    this.picker = null;
    el.remove();
    document.removeEventListener('pointerdown', this.pickerOutside, true);
    if (returnFocus && trigger && trigger.isConnected) trigger.focus();
  }

  // -- rendering -------------------------------------------------------------------------------

  render() {
    if (!this.me) return;
    if (this.view === 'thread' && this.current) {
      const rec = this.convs.get(this.current);
      if (rec) return this.renderThread(rec, false);
    }
    this.backButton.hidden = true;
    this.title.textContent = this.options.title || 'Conversations';
    clear(this.body);
    this.messagesEl = null;
    this.listEl = h('ul', { class: 'cw-list', 'aria-label': 'Conversations' });
    this.body.append(this.listEl);
    this.renderList();
    this.updateBadge();
  }

  renderList() {
    if (!this.listEl || !this.listEl.isConnected) return;
    const focused = this.listEl.getRootNode().activeElement;
    const focusedId = focused && focused.dataset ? focused.dataset.id : null;
    clear(this.listEl);
    if (!this.order.length) {
      this.listEl.append(h('li', { class: 'cw-empty', text: 'No conversations yet.' }));
      return;
    }
    for (const id of this.order) {
      const rec = this.convs.get(id);
      const last = rec.conv.last_message;
      const preview = last ? this.previewOf(last) : 'No messages yet';
      const title = this.titleOf(rec);
      const label = rec.unread ? `${title}, ${rec.unread} unread` : title;
      const button = h(
        'button',
        {
          class: 'cw-conversation',
          type: 'button',
          'data-testid': 'conversation',
          'aria-label': label,
          dataset: { id },
          onclick: () => this.openConversation(id),
          onkeydown: (event) => this.listKey(event),
        },
        h(
          'span',
          { class: 'cw-conversation-main' },
          h('span', { class: 'cw-conversation-title', text: title }),
          h('span', { class: 'cw-conversation-preview', text: preview }),
        ),
        h(
          'span',
          { class: 'cw-conversation-side' },
          last ? h('time', { class: 'cw-time', text: formatTime(last.created_at) }) : null,
          rec.unread
            ? h('span', { class: 'cw-badge cw-badge-inline', 'data-testid': 'unread', text: String(rec.unread) })
            : null,
        ),
      );
      this.listEl.append(h('li', {}, button));
      if (focusedId === id) button.focus();
    }
  }

  listKey(event) {
    if (event.key !== 'ArrowDown' && event.key !== 'ArrowUp') return;
    event.preventDefault();
    const buttons = [...this.listEl.querySelectorAll('.cw-conversation')];
    const index = buttons.indexOf(event.currentTarget);
    const next = buttons[index + (event.key === 'ArrowDown' ? 1 : -1)];
    if (next) next.focus();
  }

  previewOf(message) {
    if (message.deleted) return 'Message deleted';
    const who = message.sender && message.sender.id === this.me.user.id ? 'You: ' : '';
    const files = message.attachments || [];
    const onlyFiles = files.length && isAttachmentsOnly(message);
    return who + (onlyFiles ? `📎 ${files.map((a) => a.filename).join(', ')}` : message.content);
  }

  updateBadge() {
    if (!this.launcherBadge) return;
    const total = [...this.convs.values()].reduce((sum, rec) => sum + rec.unread, 0);
    this.launcherBadge.hidden = total === 0;
    this.launcherBadge.textContent = total > 99 ? '99+' : String(total);
    // A disclosure button: its name stays, aria-expanded says whether the panel is open.
    this.launcher.setAttribute('aria-label', total ? `Chat, ${total} unread` : 'Chat');
  }

  renderThread(rec, fresh) {
    this.backButton.hidden = false;
    this.title.textContent = this.titleOf(rec);
    if (!fresh && this.threadFor === rec.id && this.messagesEl && this.messagesEl.isConnected) return;
    this.threadFor = rec.id;
    clear(this.body);
    this.listEl = null;
    this.historyButton = h('button', {
      class: 'cw-history',
      type: 'button',
      onclick: () => this.loadOlder(rec),
    });
    this.messagesEl = h(
      'div',
      {
        class: 'cw-messages',
        role: 'log',
        'aria-label': 'Messages',
        'aria-live': 'polite',
        tabindex: '0',
        onscroll: () => {
          this.pinned = this.atBottom(); // then content that grows keeps it at the bottom
          if (this.messagesEl.scrollTop < 80) this.loadOlder(rec);
        },
      },
      this.historyButton,
    );
    this.typingEl = h('div', {
      class: 'cw-typing',
      'data-testid': 'typing',
      'aria-live': 'polite',
      hidden: true,
    });
    this.body.append(this.messagesEl, this.typingEl, this.buildComposer(rec));
    if (!rec.thread || !rec.thread.loaded) {
      this.messagesEl.append(h('p', { class: 'cw-empty', text: 'Loading messages…' }));
      return;
    }
    rec.thread.elements = new Map();
    const messages = [...rec.thread.messages.values()].sort((a, b) => a.seq - b.seq);
    for (const message of messages) this.place(rec, message);
    for (const pending of rec.thread.pending.values()) this.placePending(rec, pending);
    this.renderHistoryControl(rec);
    this.renderReceipt(rec);
    this.renderTyping(rec);
    this.scrollToBottom();
  }

  renderHistoryControl(rec) {
    if (!this.historyButton || this.current !== rec.id) return;
    const thread = rec.thread;
    this.historyButton.hidden = !thread || !thread.hasMore;
    this.historyButton.disabled = Boolean(thread && thread.loadingOlder);
    this.historyButton.textContent =
      thread && thread.loadingOlder ? 'Loading earlier messages…' : 'Load earlier messages';
  }

  buildComposer(rec) {
    this.composer = h('textarea', {
      class: 'cw-input',
      rows: '1',
      maxlength: '10000',
      placeholder: 'Write a message…',
      'aria-label': 'Message',
      'data-testid': 'composer',
      oninput: () => {
        this.autosize();
        this.sendTyping(rec, this.composer.value.length > 0);
      },
      onkeydown: (event) => {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.submit(rec);
        }
      },
      onblur: () => this.sendTyping(rec, false),
    });
    const fileInput = h('input', {
      type: 'file',
      multiple: true,
      class: 'cw-file',
      tabindex: '-1',
      'aria-hidden': 'true',
      'data-testid': 'file-input',
      onchange: () => {
        const files = [...fileInput.files];
        fileInput.value = '';
        this.addFiles(rec, files);
      },
    });
    this.uploadsEl = h('ul', { class: 'cw-uploads', 'aria-label': 'Attachments to send' });
    this.note = h('p', { class: 'cw-note', role: 'status' });
    const form = h(
      'form',
      {
        class: 'cw-composer',
        onsubmit: (event) => {
          event.preventDefault();
          this.submit(rec);
        },
      },
      this.uploadsEl,
      h(
        'div',
        { class: 'cw-composer-row' },
        h(
          'button',
          {
            class: 'cw-icon-button',
            type: 'button',
            'aria-label': 'Attach a file',
            'data-testid': 'attach',
            onclick: () => fileInput.click(),
          },
          icon('attach'),
        ),
        fileInput,
        this.composer,
        h(
          'button',
          { class: 'cw-send', type: 'submit', 'data-testid': 'send', 'aria-label': 'Send message' },
          icon('send'),
        ),
      ),
      this.note,
    );
    this.renderUploads();
    return form;
  }

  autosize() {
    const input = this.composer;
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 120)}px`;
  }

  renderUploads() {
    if (!this.uploadsEl) return;
    clear(this.uploadsEl);
    this.uploadsEl.hidden = this.uploads.length === 0;
    for (const upload of this.uploads) {
      const state =
        upload.state === 'uploading' ? 'Uploading…' : upload.state === 'failed' ? upload.error : '';
      this.uploadsEl.append(
        h(
          'li',
          { class: `cw-upload cw-upload-${upload.state}`, 'data-testid': 'upload' },
          upload.preview
            ? h('img', { class: 'cw-upload-preview', src: upload.preview, alt: '' })
            : icon('file'),
          h(
            'span',
            { class: 'cw-upload-text' },
            h('span', { class: 'cw-upload-name', text: upload.name }),
            state ? h('span', { class: 'cw-upload-state', text: state }) : null,
          ),
          h(
            'button',
            {
              class: 'cw-icon-button cw-small',
              type: 'button',
              'aria-label': `Remove ${upload.name}`,
              onclick: () => this.removeUpload(upload.key),
            },
            icon('close', 16),
          ),
        ),
      );
    }
  }

  renderTyping(rec) {
    if (this.current !== rec.id || !this.typingEl) return;
    const names = [...rec.typing.values()].map((t) => t.name);
    this.typingEl.hidden = names.length === 0;
    this.typingEl.textContent =
      names.length === 0
        ? ''
        : names.length === 1
          ? `${names[0]} is typing…`
          : names.length === 2
            ? `${names[0]} and ${names[1]} are typing…`
            : 'Several people are typing…';
  }

  // Read receipts: under your latest message, who has read up to it.
  renderReceipt(rec) {
    if (this.current !== rec.id || !this.messagesEl || !rec.thread) return;
    const mine = this.me.user.id;
    let latest = null;
    for (const message of rec.thread.messages.values()) {
      if (message.sender && message.sender.id === mine && !message.deleted) {
        if (!latest || message.seq > latest.seq) latest = message;
      }
    }
    const old = this.messagesEl.querySelector('.cw-receipt');
    if (old) old.remove();
    if (!latest) return;
    // Someone who wrote after it has seen it, whatever their read mark says.
    const answered = new Set();
    for (const message of rec.thread.messages.values()) {
      if (message.sender && message.seq > latest.seq) answered.add(message.sender.id);
    }
    const readers = (rec.conv.participants || []).filter(
      (p) => p.id !== mine && ((p.last_read_seq || 0) >= latest.seq || answered.has(p.id)),
    );
    const el = rec.thread.elements.get(latest.id);
    if (!el) return;
    el.append(
      h('p', {
        class: 'cw-receipt',
        'data-testid': 'receipt',
        text: readers.length ? `Seen by ${readers.map((p) => p.name).join(', ')}` : 'Sent',
      }),
    );
  }

  atBottom() {
    const list = this.messagesEl;
    return !list || list.scrollHeight - list.scrollTop - list.clientHeight < 60;
  }

  scrollToBottom() {
    if (this.messagesEl) this.messagesEl.scrollTop = this.messagesEl.scrollHeight;
    this.pinned = true;
  }

  // Puts a message's element in seq order (replacing its old one).
  place(rec, message) {
    if (this.current !== rec.id || !this.messagesEl) return;
    const thread = rec.thread;
    const el = this.messageElement(rec, message);
    const old = thread.elements.get(message.id);
    thread.elements.set(message.id, el);
    if (old && old.isConnected) {
      const hadFocus = old.contains(old.getRootNode().activeElement);
      old.replaceWith(el);
      if (hadFocus && !this.editing && !this.reporting) {
        const actions = el.querySelector('.cw-actions button');
        if (actions) actions.focus();
      }
      return;
    }
    let next = null;
    for (const child of this.messagesEl.children) {
      const seq = Number(child.dataset.seq);
      if (child.classList.contains('cw-pending') || seq > message.seq) {
        next = child;
        break;
      }
    }
    this.messagesEl.insertBefore(el, next);
  }

  placePending(rec, pending) {
    if (this.current !== rec.id || !this.messagesEl) return;
    const key = `pending:${pending.client_msg_id}`;
    const el = this.pendingElement(rec, pending);
    const old = rec.thread.elements.get(key);
    rec.thread.elements.set(key, el);
    if (old && old.isConnected) old.replaceWith(el);
    else this.messagesEl.append(el);
  }

  pendingElement(rec, pending) {
    const status =
      pending.state === 'sending'
        ? h('p', { class: 'cw-msg-status', text: 'Sending…' })
        : h(
            'p',
            { class: 'cw-msg-status cw-error', role: 'alert' },
            pending.state === 'queued' ? pending.error : `Not sent: ${pending.error} `,
            pending.state === 'failed'
              ? h('button', {
                  class: 'cw-link',
                  type: 'button',
                  text: 'Retry',
                  onclick: () => this.deliver(rec, pending),
                })
              : null,
          );
    return h(
      'article',
      {
        class: 'cw-msg cw-mine cw-pending',
        'data-testid': 'message',
        dataset: { state: pending.state },
        'aria-busy': pending.state === 'sending' ? 'true' : null,
      },
      h(
        'div',
        { class: 'cw-bubble' },
        pending.onlyAttachments ? null : h('p', { class: 'cw-text', text: pending.content }),
        pending.uploads.length
          ? h(
              'div',
              { class: 'cw-attachments' },
              pending.uploads.map((u) =>
                u.preview
                  ? h('img', { class: 'cw-thumb-image', src: u.preview, alt: u.attachment.filename })
                  : h('span', { class: 'cw-file-link', text: u.attachment.filename }),
              ),
            )
          : null,
      ),
      status,
    );
  }

  messageElement(rec, message) {
    const mine = Boolean(message.sender && message.sender.id === this.me.user.id);
    const system = !message.sender;
    const classes = ['cw-msg', mine ? 'cw-mine' : 'cw-theirs'];
    if (system) classes.push('cw-system');
    if (message.deleted) classes.push('cw-deleted');
    const author = system ? 'System' : mine ? 'You' : message.sender.name || 'Someone';
    const time = h('time', {
      class: 'cw-time',
      datetime: message.created_at,
      text: formatTime(message.created_at),
    });
    const meta = h(
      'div',
      { class: 'cw-meta' },
      h('span', { class: 'cw-author', text: author }),
      time,
      message.edited_at && !message.deleted ? h('span', { class: 'cw-edited', text: '(edited)' }) : null,
    );
    const article = h('article', {
      class: classes.join(' '),
      'data-testid': 'message',
      dataset: { id: message.id, seq: String(message.seq) },
      'aria-label': `${author}, ${formatTime(message.created_at)}`,
    });
    if (message.deleted) {
      article.append(
        meta,
        h('div', { class: 'cw-bubble' }, h('p', { class: 'cw-text', text: 'This message was deleted.' })),
      );
      return article;
    }
    const bubble = h('div', { class: 'cw-bubble' });
    if (this.editing && this.editing.id === message.id) {
      bubble.append(this.editForm(rec, message));
    } else if (!(message.attachments && message.attachments.length && isAttachmentsOnly(message))) {
      bubble.append(h('p', { class: 'cw-text', text: message.content }));
    }
    if (message.attachments && message.attachments.length) {
      bubble.append(this.attachmentsElement(message.attachments));
    }
    article.append(meta, bubble);
    const reactions = Object.entries(message.reactions || {}).filter(([, r]) => r.count > 0);
    if (reactions.length) {
      article.append(
        h(
          'div',
          { class: 'cw-reactions', role: 'group', 'aria-label': 'Reactions' },
          reactions.map(([emoji, r]) =>
            h(
              'button',
              {
                class: 'cw-reaction',
                type: 'button',
                'data-testid': 'reaction',
                'aria-pressed': String(Boolean(r.me)),
                'aria-label': `${emojiName(emoji)}: ${r.count}${r.me ? ', including you' : ''}`,
                onclick: () => this.toggleReaction(rec, message, emoji),
              },
              h('span', { 'aria-hidden': 'true', text: emoji }),
              h('span', { class: 'cw-reaction-count', 'aria-hidden': 'true', text: String(r.count) }),
            ),
          ),
        ),
      );
    }
    if (!system) article.append(this.actionsElement(rec, message, mine));
    if (this.reporting === message.id) article.append(this.reportForm(rec, message));
    if (message.reported) {
      article.append(
        h('p', { class: 'cw-msg-status cw-reported', tabindex: '-1', text: 'Reported. Thank you.' }),
      );
    }
    return article;
  }

  actionsElement(rec, message, mine) {
    const button = (label, name, onclick, testid) =>
      h(
        'button',
        {
          class: 'cw-icon-button cw-small',
          type: 'button',
          'aria-label': label,
          title: label,
          'data-testid': testid,
          onclick,
        },
        icon(name, 16),
      );
    const react = button(
      'Add a reaction',
      'smile',
      (event) => this.openPicker(rec, message, event.currentTarget),
      'react',
    );
    const actions = [react];
    if (mine) {
      actions.push(
        button(
          'Edit message',
          'edit',
          () => {
            this.editing = { id: message.id };
            this.place(rec, message);
            const input = rec.thread.elements.get(message.id).querySelector('.cw-edit-input');
            input.focus();
            input.setSelectionRange(input.value.length, input.value.length);
          },
          'edit',
        ),
        button('Delete message', 'trash', () => this.confirmDelete(rec, message), 'delete'),
      );
    } else if (!message.reported) {
      actions.push(
        button(
          'Report message',
          'flag',
          () => {
            this.reporting = message.id;
            this.place(rec, message);
            const select = rec.thread.elements.get(message.id).querySelector('select');
            if (select) select.focus();
          },
          'report',
        ),
      );
    }
    return h('div', { class: 'cw-actions', role: 'toolbar', 'aria-label': 'Message actions' }, actions);
  }

  confirmDelete(rec, message) {
    const el = rec.thread.elements.get(message.id);
    if (!el || el.querySelector('.cw-confirm')) return;
    const cancel = h('button', {
      class: 'cw-link',
      type: 'button',
      text: 'Cancel',
      onclick: () => {
        box.remove();
        el.querySelector('[data-testid="delete"]').focus();
      },
    });
    const box = h(
      'div',
      { class: 'cw-confirm', role: 'alertdialog', 'aria-label': 'Delete this message?' },
      h('span', { text: 'Delete this message?' }),
      h('button', {
        class: 'cw-danger',
        type: 'button',
        'data-testid': 'confirm-delete',
        text: 'Delete',
        onclick: () => this.deleteMessage(rec, message),
      }),
      cancel,
    );
    el.append(box);
    cancel.focus();
  }

  editForm(rec, message) {
    const input = h('textarea', {
      class: 'cw-edit-input',
      'aria-label': 'Edit message',
      maxlength: '10000',
      value: message.content,
    });
    const form = h(
      'form',
      {
        class: 'cw-edit',
        onsubmit: (event) => {
          event.preventDefault();
          this.saveEdit(rec, message, input.value);
        },
      },
      input,
      h(
        'div',
        { class: 'cw-edit-buttons' },
        h('button', { class: 'cw-link', type: 'submit', text: 'Save' }),
        h('button', {
          class: 'cw-link',
          type: 'button',
          text: 'Cancel',
          onclick: () => {
            this.editing = null;
            this.place(rec, message);
          },
        }),
      ),
    );
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey) {
        event.preventDefault();
        this.saveEdit(rec, message, input.value);
      } else if (event.key === 'Escape') {
        event.preventDefault();
        this.editing = null;
        this.place(rec, message);
      }
    });
    return form;
  }

  reportForm(rec, message) {
    const select = h(
      'select',
      { 'aria-label': 'Why are you reporting this message?' },
      REPORT_REASONS.map((reason) => h('option', { value: reason, text: reason })),
    );
    const form = h(
      'form',
      {
        class: 'cw-report',
        onsubmit: (event) => {
          event.preventDefault();
          this.sendReport(rec, message, select.value, form);
        },
        onkeydown: (event) => {
          if (event.key === 'Escape') {
            event.preventDefault();
            this.reporting = null;
            this.place(rec, message);
          }
        },
      },
      select,
      h('button', { class: 'cw-danger', type: 'submit', 'data-testid': 'send-report', text: 'Report' }),
      h('button', {
        class: 'cw-link',
        type: 'button',
        text: 'Cancel',
        onclick: () => {
          this.reporting = null;
          this.place(rec, message);
        },
      }),
      h('span', { class: 'cw-report-status', role: 'status' }),
    );
    return form;
  }

  attachmentsElement(attachments) {
    return h(
      'div',
      { class: 'cw-attachments' },
      attachments.map((attachment) => this.attachmentElement(attachment)),
    );
  }

  attachmentElement(attachment) {
    const url = safeUrl(attachment.url);
    const thumb = safeUrl(attachment.thumbnail_url) || url;
    const size = formatSize(attachment.size);
    const label = [attachment.filename, size].filter(Boolean).join(' · ');
    if (!url && !thumb && !attachment.urlsAsked) {
      // Real-time events carry attachments without URLs (they are per reader and
      // expire): ask for this reader's, and show the file once they come.
      attachment.urlsAsked = true;
      const slot = h('span', { class: 'cw-file-link' }, icon('file', 16), h('span', { text: label }));
      this.api
        .attachment(attachment.id)
        .then((fresh) => {
          Object.assign(attachment, fresh);
          if (slot.isConnected) slot.replaceWith(this.attachmentElement(attachment));
        })
        .catch(() => {});
      return slot;
    }
    if (String(attachment.content_type).startsWith('image/') && thumb) {
      // Its box is known before it loads (no jump), scaled into 220 × 180.
      const { width, height } = attachment;
      const scale = width && height ? Math.min(1, 220 / width, 180 / height) : 0;
      const image = h('img', {
        class: 'cw-thumb-image',
        src: thumb,
        alt: attachment.filename,
        width: scale ? Math.round(width * scale) : null,
        height: scale ? Math.round(height * scale) : null,
      });
      image.addEventListener('error', () => this.refreshAttachment(attachment, image), {
        once: true,
      });
      image.addEventListener('load', () => this.pinned && this.scrollToBottom(), {
        once: true,
      });
      const button = h(
        'button',
        {
          class: 'cw-thumb',
          type: 'button',
          'aria-label': `Open image ${attachment.filename}`,
          onclick: () => this.openLightbox(attachment, button),
        },
        image,
      );
      return button;
    }
    return url
      ? h(
          'a',
          { class: 'cw-file-link', href: url, target: '_blank', rel: 'noopener noreferrer' },
          icon('file', 16),
          h('span', { text: label }),
        )
      : h('span', { class: 'cw-file-link' }, icon('file', 16), h('span', { text: label }));
  }

  // Attachment URLs are presigned and expire: ask for fresh ones once.
  async refreshAttachment(attachment, image) {
    try {
      const fresh = await this.api.attachment(attachment.id);
      Object.assign(attachment, fresh);
      const url = safeUrl(fresh.thumbnail_url) || safeUrl(fresh.url);
      if (url) image.src = url;
    } catch {
      image.alt = `${attachment.filename} (not available)`;
    }
  }
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

function isAttachmentsOnly(message) {
  const meta = message.metadata && message.metadata.confab_widget;
  return Boolean(meta && meta.attachments_only);
}
