// The Confab chat widget: a launcher and a panel (or an inline panel in a container), in a
// shadow root so the host page's styles and ours never mix, drawn on the headless client
// (client.js), which holds every conversation's state.
//
//   import { mount } from '<gateway>/widget/v1/widget.js';
//   const chat = mount({ sessionToken: 'st_…', refreshSession: async () => newToken });
//
// (confab-widget.js is the script-tag way.) Invariants:
// - Everything a user or a server wrote reaches the page as text nodes (dom.js); links in
//   messages are found by linkify-it and pass links.js; URLs from the server pass safeUrl.
// - Every string a person reads comes from the catalogue (i18n.js), never from the server.
// - The message list is one tab stop (a WAI-ARIA feed with a roving tabindex); a message is
//   marked read only once it has been on screen in a visible tab.
// - Attachment URLs expire: a file, download or image is opened with fresh ones.

import { codePoints, createClient, MAX_CONTENT, randomId } from './client.js';
import { avatarColor, clear, h, icon, initials, safeUrl } from './dom.js';
import { EMOJI, emojiKey, QUICK } from './emoji.js';
import { createI18n, I18n } from './i18n.js';
import { linkParts } from './links.js';
import { MentionPicker, mentionParts } from './mentions.js';
import { previewCard } from './preview.js';
import { ThreadView } from './threads.js';
import { createSupport } from './support.js';
import { notificationSettings, onPushClick, widgetPushWorker } from './notifications.js';
import { SearchBox } from './search.js';

const BASE = new URL('./', import.meta.url).href;
const GROUP_MS = 5 * 60_000; // one sender's messages this close together form a group
const LONG_PRESS_MS = 450;
const NEAR_LIMIT = 500; // characters left when the composer starts counting
const REFRESH_BEFORE_MS = 60_000; // attachment URLs this close to expiry are renewed
// What a report says to moderators (stable, in English) and the catalogue key shown.
const REPORT_REASONS = [
  ['Spam', 'report.spam'],
  ['Harassment or abuse', 'report.abuse'],
  ['Inappropriate content', 'report.inappropriate'],
  ['Something else', 'report.other'],
];

export function mount(options) {
  const widget = new Widget(options || {});
  widget.ready = widget.start();
  return {
    open: () => widget.setOpen(true),
    close: () => widget.setOpen(false),
    openConversation: (id) => widget.openConversation(id),
    setSession: (token, expiresAt) => widget.client.setSession(token, expiresAt),
    destroy: () => widget.destroy(),
    client: widget.client,
    ready: widget.ready,
    get state() {
      return widget.client.connection;
    },
  };
}

class Widget {
  constructor(options) {
    const token = options.sessionToken || options.token;
    if (!token) throw new Error('Confab widget: a session token is required (sessionToken).');
    this.options = options;
    this.inline = Boolean(options.container);
    this.client = createClient({
      sessionToken: token,
      refreshSession: options.refreshSession,
      sessionExpiresAt: options.sessionExpiresAt,
      apiUrl: options.apiUrl,
      assetsUrl: BASE,
    });
    this.view = 'loading';
    this.current = null;
    this.isOpen = this.inline || Boolean(options.open);
    this.items = new Map(); // message id → {message, sig, el}
    this.visible = new Map(); // article → seq, of others' messages on screen
    this.fresh = new Map(); // attachment id → with fresh URLs
    this.asking = new Map(); // attachment id → the request for fresh URLs
    this.uploads = [];
    this.roving = null;
    this.pinned = true;
    this.newCount = 0;
    this.editing = null;
    this.reporting = null;
    this.confirming = null;
    this.reported = new Set();
    this.menu = null;
    this.cleanups = [];
    this.syncQueued = false;
  }

  // -- start and stop ------------------------------------------------------------------

  async start() {
    const started = this.client.start();
    started.catch(() => {});
    try {
      this.i18n = await createI18n({
        base: BASE,
        locale: this.options.locale,
        strings: this.options.strings,
      });
    } catch {
      this.i18n = new I18n('en', {});
    }
    this.t = (key, params) => this.i18n.t(key, params);
    this.buildShell();
    this.bindClient();
    // A click on a push notification of this site opens its conversation here.
    this.cleanups.push(
      onPushClick((id) => {
        this.setOpen(true);
        this.openConversation(id);
      }),
    );
    this.render();
    try {
      await started;
    } catch (error) {
      this.startFailed(error);
      return;
    }
    // "Send us a message", when the workspace takes messages (support.js).
    this.support = await createSupport(this).catch(() => null);
    this.view = 'list';
    if (this.options.conversationId) await this.openConversation(this.options.conversationId);
    else this.render();
    this.el.dataset.state = 'ready';
  }

  startFailed(error) {
    this.view = error && error.status === 401 ? 'ended' : 'failed';
    this.startError = error;
    this.el.dataset.state = this.view;
    this.render();
  }

  destroy() {
    for (const undo of this.cleanups) undo();
    this.cleanups = [];
    if (this.observer) this.observer.disconnect();
    if (this.resizer) this.resizer.disconnect();
    this.closeMenu();
    this.client.destroy();
    this.restoreTitle();
    this.host.remove();
  }

  listen(target, name, handler, options) {
    target.addEventListener(name, handler, options);
    this.cleanups.push(() => target.removeEventListener(name, handler, options));
  }

  bindClient() {
    const on = (type, handler) => this.cleanups.push(this.client.on(type, handler));
    on('connection', () => this.updateStatus());
    on('session', ({ state }) => {
      if (state === 'expired') {
        this.view = 'ended';
        this.render();
      } else if (this.view === 'ended') {
        this.view = this.current ? 'thread' : 'list';
        this.render();
      }
    });
    on('conversations', () => this.queue());
    on('conversation', ({ conversationId }) => {
      if (this.view === 'list' || this.current === conversationId) this.queue();
      else this.updateBadge();
    });
    on('messages', (detail) => this.onMessages(detail));
    on('message', (detail) => this.onMessage(detail));
    on('read', ({ conversationId }) => this.current === conversationId && this.queue());
    on('typing', ({ conversationId }) => this.current === conversationId && this.renderTyping());
    this.listen(document, 'visibilitychange', () => {
      if (document.visibilityState !== 'visible') return;
      this.checkRead();
      this.refreshExpired();
    });
    this.listen(window, 'online', () => this.updateStatus());
  }

  // Many events in one go (a backlog) are drawn once.
  queue() {
    if (this.syncQueued) return;
    this.syncQueued = true;
    queueMicrotask(() => {
      this.syncQueued = false;
      if (this.view === 'list') this.renderList();
      else if (this.view === 'thread') this.syncThread();
      this.updateBadge();
    });
  }

  // -- the shell: launcher, panel, lightbox ------------------------------------------------

  buildShell() {
    const t = this.t;
    this.host = h('div', { class: 'confab-widget' });
    this.root = this.host.attachShadow({ mode: 'open' });
    const style = h('link', { rel: 'stylesheet', href: BASE + 'widget.css' });
    this.el = h('div', {
      class: 'cw',
      lang: this.i18n.locale,
      dir: this.i18n.dir,
      dataset: { mode: this.inline ? 'inline' : 'floating', state: 'loading' },
      onkeydown: (event) => this.onRootKey(event),
    });
    this.el.hidden = true; // until the stylesheet is in, so nothing flashes unstyled
    const show = () => {
      this.el.hidden = false;
    };
    style.addEventListener('load', show);
    style.addEventListener('error', show);
    if (this.options.color) this.el.style.setProperty('--cw-accent', this.options.color);
    this.root.append(style, this.el);

    this.backButton = h(
      'button',
      {
        class: 'cw-icon-button',
        type: 'button',
        'aria-label': t('panel.back'),
        'data-testid': 'back',
        onclick: () => this.showList(),
      },
      icon('back'),
    );
    this.backButton.firstChild.classList.add('cw-flip');
    this.title = h('h2', { class: 'cw-title', id: 'cw-title', tabindex: '-1' });
    this.status = h('span', {
      class: 'cw-connection',
      role: 'status',
      'data-testid': 'connection',
      dataset: { state: 'connecting' },
    });
    const closeButton = this.inline
      ? null
      : h(
          'button',
          {
            class: 'cw-icon-button',
            type: 'button',
            'aria-label': t('panel.close'),
            onclick: () => this.setOpen(false),
          },
          icon('close'),
        );
    this.body = h('div', { class: 'cw-body' });
    this.drop = h('div', { class: 'cw-drop', hidden: true, 'aria-hidden': 'true' }, t('composer.drop'));
    this.announcer = h('div', { class: 'cw-sr', 'aria-live': 'polite', 'data-testid': 'announcer' });
    this.panel = h(
      'section',
      {
        class: 'cw-panel',
        id: 'cw-panel',
        role: this.inline ? 'region' : 'dialog',
        'aria-labelledby': 'cw-title',
        hidden: !this.isOpen,
        ondragenter: (event) => this.onDrag(event),
        ondragover: (event) => this.onDrag(event),
        ondragleave: (event) => this.onDragLeave(event),
        ondrop: (event) => this.onDrop(event),
      },
      h(
        'div',
        { class: 'cw-header' },
        this.backButton,
        h('div', { class: 'cw-heading' }, this.title, this.status),
        closeButton,
      ),
      this.body,
      h(
        'div',
        { class: 'cw-powered' },
        h('span', { class: 'cw-dot', 'aria-hidden': 'true' }),
        h('span', { text: t('panel.powered') }),
        ' ',
        h('strong', { text: 'Confab' }),
      ),
      this.drop,
      this.announcer,
    );
    if (!this.inline) {
      this.launcherBadge = h('span', { class: 'cw-badge', 'data-testid': 'unread', hidden: true });
      this.launcher = h(
        'button',
        {
          class: 'cw-launcher',
          type: 'button',
          'data-testid': 'launcher',
          'aria-label': t('launcher.label'),
          'aria-controls': 'cw-panel',
          'aria-expanded': String(this.isOpen),
          onclick: () => this.setOpen(!this.isOpen),
        },
        icon('chat', 26),
        this.launcherBadge,
      );
      this.el.append(this.launcher);
    }
    this.buildLightbox();
    this.el.append(this.panel, this.lightbox);
    (this.options.container || document.body).append(this.host);
    this.updateStatus();
  }

  buildLightbox() {
    const t = this.t;
    this.lightboxImage = h('img', { class: 'cw-lightbox-image', alt: '' });
    this.lightboxCaption = h('figcaption', { class: 'cw-lightbox-caption' });
    this.lightboxNote = h('p', { class: 'cw-lightbox-note', role: 'status' });
    this.lightboxClose = h(
      'button',
      {
        class: 'cw-icon-button cw-lightbox-close',
        type: 'button',
        'aria-label': t('lightbox.close'),
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
        'aria-label': t('lightbox.label'),
        'data-testid': 'lightbox',
        hidden: true,
        onclick: (event) => {
          if (event.target === this.lightbox) this.closeLightbox();
        },
        onkeydown: (event) => {
          if (event.key === 'Escape' || event.key === 'Tab') {
            event.preventDefault();
            event.stopPropagation();
            if (event.key === 'Escape') this.closeLightbox();
          }
        },
      },
      h('figure', {}, this.lightboxImage, this.lightboxCaption, this.lightboxNote),
      this.lightboxClose,
    );
  }

  setOpen(open) {
    if (this.inline) return;
    this.isOpen = open;
    this.panel.hidden = !open;
    this.launcher.setAttribute('aria-expanded', String(open));
    if (open) {
      this.render();
      this.focusDefault();
      this.checkRead();
    } else {
      this.closeMenu();
      this.launcher.focus();
    }
  }

  focusDefault() {
    let target = null;
    if (this.view === 'thread') {
      target = this.body.querySelector('[data-testid="composer"]:not(:disabled)');
    } else if (this.view === 'list') {
      target = this.body.querySelector('.cw-conversation');
    }
    const listNotLoaded = this.view === 'list' && !target;
    if (!target) target = this.body.querySelector('[data-focus-first]');
    (target || this.title).focus();
    // The list opened before it loaded: its first row takes the focus when it comes,
    // unless the user has moved it meanwhile (renderList).
    this.pendingFocus = listNotLoaded ? target || this.title : null;
  }

  onRootKey(event) {
    if (event.key !== 'Escape' || event.defaultPrevented) return;
    if (this.menu) {
      event.preventDefault();
      this.closeMenu(true);
    } else if (!this.inline && this.isOpen) {
      event.preventDefault();
      this.setOpen(false);
    }
  }

  updateStatus() {
    const state = this.client.connection;
    this.status.dataset.state = state;
    this.status.textContent = state === 'ended' ? '' : this.t(`status.${state}`);
    this.status.hidden = state === 'ended' || this.view === 'ended';
  }

  updateBadge() {
    const total = this.client.unreadTotal;
    if (this.launcherBadge) {
      this.launcherBadge.hidden = total === 0;
      this.launcherBadge.textContent = total > 99 ? '99+' : this.i18n.number(total);
      // A disclosure button: its name stays, aria-expanded says whether the panel is open.
      this.launcher.setAttribute(
        'aria-label',
        total ? this.t('launcher.unread', { count: total }) : this.t('launcher.label'),
      );
    }
    if (this.options.unreadInTitle) this.showInTitle(total);
  }

  // The host page's title carries the unread count, when the page asked for it.
  showInTitle(total) {
    if (document.title !== this.titleSet) this.titleBase = document.title;
    const title = total ? this.t('title.unread', { count: total, title: this.titleBase }) : this.titleBase;
    if (document.title !== title) document.title = title;
    this.titleSet = title;
  }

  restoreTitle() {
    if (this.titleSet !== undefined && document.title === this.titleSet) {
      document.title = this.titleBase;
    }
  }

  // -- views -------------------------------------------------------------------------------

  render() {
    this.closeMenu();
    this.updateStatus();
    if (this.view === 'thread' && this.current) return this.renderThread();
    this.backButton.hidden = true;
    this.leaveThread();
    clear(this.body);
    if (this.view === 'loading') {
      this.title.textContent = this.options.title || this.t('list.title');
      this.body.append(h('p', { class: 'cw-empty', role: 'status', text: this.t('loading') }));
      return;
    }
    if (this.view === 'ended' || this.view === 'failed') return this.renderProblem();
    if (this.view === 'support' && this.support) return this.support.render(this.body);
    if (this.view === 'settings') return this.renderSettings();
    this.title.textContent = this.options.title || this.t('list.title');
    this.listEl = h('ul', { class: 'cw-list', 'aria-labelledby': 'cw-title' });
    const settings = h('button', {
      class: 'cw-settings-open',
      type: 'button',
      'data-testid': 'open-settings',
      text: this.t('settings.open'),
      onclick: () => this.showSettings(),
    });
    if (this.support) this.body.append(this.support.entry());
    this.body.append(this.searchBox(null, this.listEl).el, this.listEl, settings);
    this.renderList();
    this.updateBadge();
  }

  // The session is over, or the chat could not start: say so plainly, and what to do.
  renderProblem() {
    const t = this.t;
    const ended = this.view === 'ended';
    const offline = !ended && this.startError && this.startError.offline;
    this.title.textContent = this.options.title || this.t('list.title');
    const again = ended
      ? this.options.refreshSession
        ? h('button', {
            class: 'cw-button',
            type: 'button',
            'data-focus-first': '',
            text: t('action.retry'),
            onclick: () => this.client.renewSession(),
          })
        : h('button', {
            class: 'cw-button',
            type: 'button',
            'data-focus-first': '',
            text: t('session.reload'),
            onclick: () => location.reload(),
          })
      : h('button', {
          class: 'cw-button',
          type: 'button',
          'data-focus-first': '',
          text: t('action.retry'),
          onclick: () => this.retryStart(),
        });
    this.body.append(
      h(
        'div',
        { class: 'cw-problem', role: 'alert', 'data-testid': ended ? 'session-ended' : 'start-failed' },
        h('p', { class: 'cw-problem-title', text: t(ended ? 'session.ended' : 'start.failed') }),
        h('p', {
          class: 'cw-problem-text',
          text: t(ended ? 'session.endedText' : offline ? 'error.network' : 'start.failedText'),
        }),
        again,
      ),
    );
  }

  async retryStart() {
    this.view = 'loading';
    this.render();
    try {
      await this.client.start();
    } catch (error) {
      this.startFailed(error);
      this.focusDefault();
      return;
    }
    this.view = 'list';
    this.el.dataset.state = 'ready';
    this.render();
    this.focusDefault();
  }

  // -- the conversation list ----------------------------------------------------------------

  renderList() {
    if (!this.listEl || !this.listEl.isConnected) return;
    const t = this.t;
    const focused = this.root.activeElement;
    const focusedId = focused && focused.dataset ? focused.dataset.id : null;
    clear(this.listEl);
    const error = this.client.listError;
    if (!this.client.listLoaded) {
      this.listEl.append(
        error
          ? h(
              'li',
              { class: 'cw-problem', role: 'alert' },
              h('p', { class: 'cw-problem-title', text: t('list.failed') }),
              h('button', {
                class: 'cw-button',
                type: 'button',
                'data-focus-first': '',
                text: t('action.retry'),
                onclick: () => this.client.refreshList().catch(() => {}),
              }),
            )
          : h('li', { class: 'cw-empty', role: 'status', text: t('loading') }),
      );
      return;
    }
    const conversations = this.client.conversations;
    if (!conversations.length && this.support) return; // its card above says what to do
    if (!conversations.length) {
      this.listEl.append(
        h(
          'li',
          { class: 'cw-empty-state', 'data-testid': 'no-conversations' },
          h('span', { class: 'cw-empty-icon', 'aria-hidden': 'true' }, icon('chat', 28)),
          h('p', { class: 'cw-problem-title', text: t('list.empty') }),
          h('p', { class: 'cw-problem-text', text: t('list.emptyText') }),
        ),
      );
      return;
    }
    const now = new Date();
    for (const conv of conversations) {
      const last = conv.last_message;
      const title = this.titleOf(conv);
      const button = h(
        'button',
        {
          class: 'cw-conversation',
          type: 'button',
          'data-testid': 'conversation',
          dataset: { id: conv.id },
          onclick: () => this.openConversation(conv.id),
          onkeydown: (event) => this.listKey(event),
        },
        this.avatar(this.otherOf(conv), 36),
        h(
          'span',
          { class: 'cw-conversation-main' },
          h('span', { class: 'cw-conversation-title', text: title }),
          h('span', { class: 'cw-conversation-preview', text: last ? this.previewOf(last) : t('list.noMessages') }),
        ),
        h(
          'span',
          { class: 'cw-conversation-side' },
          last
            ? h('time', { class: 'cw-time', datetime: last.created_at, text: this.i18n.ago(last.created_at, now) })
            : null,
          conv.unread_count
            ? h(
                'span',
                { class: 'cw-badge cw-badge-inline' },
                h('span', { 'data-testid': 'unread', text: this.i18n.number(conv.unread_count) }),
                h('span', { class: 'cw-sr', text: ` ${t('list.unread', { count: conv.unread_count })}` }),
              )
            : null,
        ),
      );
      this.listEl.append(h('li', {}, button));
      if (focusedId === conv.id) button.focus();
    }
    if (this.pendingFocus && this.root.activeElement === this.pendingFocus) {
      const first = this.listEl.querySelector('.cw-conversation');
      if (first) {
        this.pendingFocus = null;
        first.focus();
      }
    }
  }

  listKey(event) {
    const buttons = [...this.listEl.querySelectorAll('.cw-conversation')];
    const index = buttons.indexOf(event.currentTarget);
    const next = {
      ArrowDown: buttons[index + 1],
      ArrowUp: buttons[index - 1],
      Home: buttons[0],
      End: buttons[buttons.length - 1],
    }[event.key];
    if (next) {
      event.preventDefault();
      next.focus();
    }
  }

  titleOf(conv) {
    if (conv.title) return conv.title;
    const others = (conv.participants || []).filter((p) => p.id !== this.client.user.id && p.name);
    return this.i18n.list(others.map((p) => p.name)) || this.t('conversation.untitled');
  }

  otherOf(conv) {
    const others = (conv.participants || []).filter((p) => p.id !== this.client.user.id);
    return others[0] || { id: conv.id, name: conv.title || '' };
  }

  previewOf(message) {
    if (message.deleted) return this.t('list.deleted');
    const files = message.attachments || [];
    const text = filesOnly(message)
      ? this.t('list.files', { names: this.i18n.list(files.map((a) => a.filename)) })
      : message.content;
    const mine = message.sender && message.sender.id === this.client.user.id;
    return mine ? this.t('list.you', { text }) : text;
  }

  nameOf(conv, userId) {
    if (userId === this.client.user.id) return this.t('message.you');
    const found = (conv.participants || []).find((p) => p.id === userId);
    return (found && found.name) || this.t('message.someone');
  }

  avatar(person, size) {
    const url = safeUrl(person && person.avatar_url);
    const box = h('span', {
      class: 'cw-avatar',
      'aria-hidden': 'true',
      dataset: { size: String(size) },
    });
    if (url) box.append(h('img', { src: url, alt: '', width: size, height: size }));
    else {
      box.textContent = initials(person && person.name, this.i18n.locale);
      box.style.setProperty('--cw-avatar', avatarColor(person && person.id));
    }
    return box;
  }

  // -- a thread ------------------------------------------------------------------------------

  // The user's notification settings (notifications.js), with the back button to the list.
  showSettings() {
    this.view = 'settings';
    this.current = null;
    this.render();
    this.focusDefault();
  }

  renderSettings() {
    this.backButton.hidden = false;
    this.title.textContent = this.t('settings.title');
    const pushWorker = widgetPushWorker(this.options.pushWorker, BASE);
    this.body.append(notificationSettings({ api: this.client.api, t: this.t, pushWorker }));
  }

  showList() {
    this.view = 'list';
    this.current = null;
    this.render();
    this.focusDefault();
  }

  async openConversation(id) {
    this.closeMenu();
    if (this.current !== id) this.clearUploads();
    this.view = 'thread';
    this.current = id;
    this.editing = this.reporting = this.confirming = null;
    this.roving = null;
    this.newCount = 0;
    this.render();
    try {
      await this.client.open(id);
    } catch {
      // The thread says it could not be loaded, with a button to try again.
    }
    if (this.current !== id) return;
    this.render();
    this.focusDefault();
    this.checkRead();
  }

  leaveThread() {
    if (this.replies) this.replies.close(false);
    if (this.observer) this.observer.disconnect();
    if (this.resizer) this.resizer.disconnect();
    this.observer = this.resizer = null;
    this.visible.clear();
    this.items.clear();
    this.feed = this.scroller = this.composer = this.typingEl = null;
  }

  renderThread() {
    const t = this.t;
    const id = this.current;
    const conv = this.client.conversation(id);
    this.backButton.hidden = false;
    this.title.textContent = conv ? this.titleOf(conv) : this.options.title || this.t('list.title');
    if (this.feed && this.feed.isConnected && this.threadFor === id) return this.syncThread();
    this.leaveThread();
    this.threadFor = id;
    this.listEl = null;
    clear(this.body);
    this.historyEl = h('div', { class: 'cw-history' });
    this.stateEl = h('div', { class: 'cw-thread-state' });
    this.feed = h('div', {
      class: 'cw-feed',
      role: 'feed',
      'aria-label': t('messages.label'),
      'data-testid': 'feed',
      onkeydown: (event) => this.onFeedKey(event),
      onfocusin: (event) => this.onFeedFocus(event),
      onpointerdown: (event) => this.onPointerDown(event),
      oncontextmenu: (event) => this.onContextMenu(event),
      onmouseover: (event) => this.setActive(event.target.closest('.cw-msg')),
      onmouseleave: () => this.setActive(null),
    });
    this.scroller = h(
      'div',
      {
        class: 'cw-scroll',
        onscroll: () => this.onScroll(),
      },
      this.historyEl,
      this.stateEl,
      this.feed,
    );
    this.pill = h(
      'button',
      {
        class: 'cw-pill',
        type: 'button',
        hidden: true,
        'data-testid': 'new-messages',
        onclick: () => this.jumpToLatest(),
      },
      h('span', {}),
      icon('down', 16),
    );
    this.typingEl = h('div', { class: 'cw-typing', 'data-testid': 'typing', 'aria-live': 'polite' });
    const thread = h('div', { class: 'cw-thread' }, this.scroller, this.pill);
    // The search box is shown above the thread but comes last in the tab order, so the
    // way from the header to the composer stays as short as it was (widget.css: order).
    const search = this.searchBox(id, thread).el;
    search.classList.add('cw-search-thread');
    this.body.append(thread, this.typingEl, this.buildComposer(), search);
    this.observer = new IntersectionObserver((entries) => this.onIntersect(entries), {
      root: this.scroller,
      threshold: [0, 0.5, 1],
    });
    // The list's box shrinks when the composer grows (text, files): keep the end in view.
    let height = 0;
    this.resizer = new ResizeObserver(() => {
      const now = this.scroller.clientHeight;
      if (now !== height && this.pinned) this.scrollToBottom();
      height = now;
    });
    this.resizer.observe(this.scroller);
    this.pinned = true;
    this.syncThread();
    this.renderTyping();
    this.scrollToBottom();
  }

  // A search box (search.js) for every conversation (`id` null) or one; `under`: what its
  // results cover while they show.
  searchBox(id, under) {
    const box = new SearchBox({
      api: this.client.api,
      t: this.t,
      i18n: this.i18n,
      conversationId: id,
      titleOf: (cid) => {
        const conv = this.client.conversation(cid);
        return conv ? this.titleOf(conv) : '';
      },
      pick: (hit) => this.jumpTo(hit.message),
    });
    box.el.addEventListener('searchtoggle', (event) => {
      under.hidden = event.detail;
    });
    return box;
  }

  // Open a found message's conversation and show the message in context: older pages are
  // loaded until it is there, then it is scrolled to, marked and focused.
  async jumpTo({ conversation_id: id, id: messageId }) {
    if (this.view !== 'thread' || this.current !== id) await this.openConversation(id);
    for (let page = 0; page < 100 && !this.items.has(messageId) && this.current === id; page++) {
      const more = await this.client.loadOlder(id).catch(() => false);
      if (!more && !this.items.has(messageId)) break;
    }
    const item = this.items.get(messageId);
    if (!item || this.current !== id) return;
    this.pinned = false;
    item.el.scrollIntoView({ block: 'center' });
    item.el.classList.add('cw-found');
    this.setRoving(item.el);
    item.el.focus();
  }

  onMessages({ conversationId, reason }) {
    if (conversationId !== this.current || this.view !== 'thread') return;
    if (reason === 'older' && this.scroller) {
      // Stay where the reader was while older messages go in above.
      this.keepFromBottom = this.scroller.scrollHeight - this.scroller.scrollTop;
    }
    if (reason === 'loaded') this.pinned = true;
    this.queue();
  }

  onMessage({ conversationId, message, replaces, previous }) {
    if (conversationId !== this.current || this.view !== 'thread' || !this.feed) {
      this.updateBadge();
      return;
    }
    const me = this.client.user.id;
    const mine = message.sender && message.sender.id === me;
    if (message.local && message.status === 'sending') {
      this.pinned = true; // you sent it: follow it down
    }
    if (!message.local && !previous && !replaces && !mine && !message.deleted) {
      if (!this.pinned) this.newCount += 1;
      const conv = this.client.conversation(conversationId);
      const name = message.sender ? this.nameOf(conv, message.sender.id) : this.t('message.system');
      this.announce(this.t('announce.message', { name, text: this.previewOf(message) }));
    }
    this.queue();
  }

  announce(text) {
    this.announcer.textContent = '';
    queueMicrotask(() => {
      this.announcer.textContent = text;
    });
  }

  // Draws the thread's messages: each one rebuilt only when it, or what is drawn around
  // it (its group, its day, a receipt, an open form), changed.
  syncThread() {
    if (!this.feed || !this.feed.isConnected) return;
    const id = this.current;
    const conv = this.client.conversation(id);
    if (conv) this.title.textContent = this.titleOf(conv);
    const thread = this.client.thread(id);
    this.feed.setAttribute('aria-busy', String(thread.loading || thread.loadingOlder));
    this.renderThreadState(thread);
    this.renderHistory(thread);
    this.renderComposerState(thread);
    const messages = thread.loaded ? this.client.messages(id) : [];
    const me = this.client.user.id;
    let receiptOn = null;
    for (const m of messages) if (!m.local && !m.deleted && m.sender && m.sender.id === me) receiptOn = m;
    const receipt = receiptOn ? this.receiptText(receiptOn) : '';
    const focusWithin = this.feed.contains(this.root.activeElement) ? this.root.activeElement : null;
    const wanted = [];
    let previous = null;
    for (const message of messages) {
      const grouped = sameGroup(previous, message, this.i18n);
      const newDay = !previous || !this.i18n.sameDay(previous.created_at, message.created_at);
      const sig = [
        grouped,
        newDay,
        message.id === (this.editing && this.editing.id),
        message.id === this.reporting,
        message.id === this.confirming,
        message === receiptOn ? receipt : '',
        this.freshStamp(message),
      ].join('|');
      let item = this.items.get(message.id);
      if (!item || item.message !== message || item.sig !== sig) {
        const el = this.messageElement(conv, message, { grouped, newDay, receipt: message === receiptOn ? receipt : '' });
        if (item && item.el.isConnected) this.swap(item.el, el, focusWithin);
        if (item) this.unobserve(item.el);
        item = { message, sig, el };
        this.items.set(message.id, item);
        if (!message.local && message.sender && message.sender.id !== me) this.observer.observe(el);
      }
      wanted.push(item.el);
      previous = message;
    }
    // Locals the server confirmed, discarded ones: gone.
    const keep = new Set(messages.map((m) => m.id));
    for (const [key, item] of this.items) {
      if (!keep.has(key)) {
        this.unobserve(item.el);
        this.items.delete(key);
      }
    }
    let cursor = this.feed.firstChild;
    for (const el of wanted) {
      if (el === cursor) cursor = cursor.nextSibling;
      else this.feed.insertBefore(el, cursor);
    }
    while (cursor) {
      const next = cursor.nextSibling;
      cursor.remove();
      cursor = next;
    }
    wanted.forEach((el, index) => {
      el.setAttribute('aria-posinset', String(index + 1));
      el.setAttribute('aria-setsize', thread.hasMore ? '-1' : String(wanted.length));
    });
    this.renderWelcome(thread, messages.length === 0);
    this.updateRoving();
    if (this.keepFromBottom !== undefined) {
      this.scroller.scrollTop = this.scroller.scrollHeight - this.keepFromBottom;
      this.keepFromBottom = undefined;
    } else if (this.pinned) {
      this.scrollToBottom();
    }
    if (focusWithin && !focusWithin.isConnected) this.focusRoving();
    this.renderPill();
    this.updateBadge();
  }

  // Replaces a message's element, keeping focus on the same control when it had it.
  swap(old, el, focused) {
    const had = focused && old.contains(focused);
    const key = had ? focused.dataset.focusKey || null : null;
    old.replaceWith(el);
    if (!had || this.menu) return;
    const target = (key && el.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)) || el;
    if (!this.editing && !this.reporting) target.focus();
  }

  unobserve(el) {
    if (this.observer) this.observer.unobserve(el);
    this.visible.delete(el);
  }

  renderThreadState(thread) {
    const t = this.t;
    clear(this.stateEl);
    if (thread.error && !thread.loaded) {
      this.stateEl.append(
        h(
          'div',
          { class: 'cw-problem', role: 'alert', 'data-testid': 'thread-failed' },
          h('p', { class: 'cw-problem-title', text: t('thread.failed') }),
          h('p', {
            class: 'cw-problem-text',
            text: this.errorText(thread.error, 'thread.failedText'),
          }),
          h('button', {
            class: 'cw-button',
            type: 'button',
            'data-focus-first': '',
            'data-testid': 'retry-thread',
            text: t('action.retry'),
            onclick: () => this.openConversation(this.current),
          }),
        ),
      );
    } else if (!thread.loaded) {
      this.stateEl.append(h('p', { class: 'cw-empty', role: 'status', text: t('thread.loading') }));
    }
  }

  renderWelcome(thread, empty) {
    const show = thread.loaded && empty;
    if (!show) {
      if (this.welcomeEl) this.welcomeEl.remove();
      this.welcomeEl = null;
      return;
    }
    if (this.welcomeEl) return;
    this.welcomeEl = h(
      'div',
      { class: 'cw-welcome', 'data-testid': 'welcome' },
      h('span', { class: 'cw-welcome-icon cw-emoji-font', 'aria-hidden': 'true', text: '👋' }),
      h('p', { class: 'cw-problem-title', text: this.t('thread.welcome') }),
      h('p', { class: 'cw-problem-text', text: this.t('thread.welcomeText') }),
    );
    this.stateEl.after(this.welcomeEl);
  }

  renderHistory(thread) {
    const t = this.t;
    // Rebuilt only when what it says changes: a status made afresh on every render would be
    // announced again by screen readers (and would pull the node from under a pointer).
    const shown = !thread.loaded || !thread.hasMore ? '' : thread.loadingOlder ? 'loading' : this.olderFailed ? 'failed' : 'load';
    if (this.historyEl.dataset.shown === shown) return;
    this.historyEl.dataset.shown = shown;
    clear(this.historyEl);
    if (!shown) return;
    if (thread.loadingOlder) {
      this.historyEl.append(
        h(
          'p',
          { class: 'cw-history-status', role: 'status', 'data-testid': 'history' },
          h('span', { class: 'cw-spinner', 'aria-hidden': 'true' }),
          h('span', { text: t('history.loading') }),
        ),
      );
      return;
    }
    this.historyEl.append(
      h('button', {
        class: 'cw-history-button',
        type: 'button',
        'data-testid': 'history',
        text: this.olderFailed ? t('history.failed') : t('history.load'),
        onclick: () => this.loadOlder(),
      }),
    );
  }

  async loadOlder() {
    const id = this.current;
    const focused = this.historyEl.contains(this.root.activeElement);
    try {
      this.olderFailed = false;
      await this.client.loadOlder(id);
    } catch {
      this.olderFailed = true;
      this.queue();
    }
    if (focused && this.current === id) {
      // The button was redrawn (or is gone: no more history): keep the keyboard near it.
      queueMicrotask(() => {
        const button = this.historyEl && this.historyEl.querySelector('button');
        if (button) button.focus();
        else this.focusRoving();
      });
    }
  }

  onScroll() {
    const el = this.scroller;
    this.pinned = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (this.pinned && this.newCount) {
      this.newCount = 0;
      this.renderPill();
    }
    if (el.scrollTop < 80) {
      const thread = this.client.thread(this.current);
      if (thread.loaded && thread.hasMore && !thread.loadingOlder && !this.olderFailed) this.loadOlder();
    }
  }

  scrollToBottom() {
    if (this.scroller) this.scroller.scrollTop = this.scroller.scrollHeight;
    this.pinned = true;
  }

  renderPill() {
    if (!this.pill) return;
    const show = this.newCount > 0 && !this.pinned;
    this.pill.hidden = !show;
    if (show) this.pill.firstChild.textContent = this.t('thread.newMessages', { count: this.newCount });
  }

  jumpToLatest() {
    this.newCount = 0;
    this.scroller.scrollTo({ top: this.scroller.scrollHeight, behavior: smooth() });
    this.pinned = true;
    this.renderPill();
    const items = [...this.feed.children];
    const last = items[items.length - 1];
    if (last) {
      this.setRoving(last);
      last.focus({ preventScroll: true });
    }
  }

  // -- read marks: only what was on screen ----------------------------------------------------

  onIntersect(entries) {
    for (const entry of entries) {
      const seq = Number(entry.target.dataset.seq);
      const root = entry.rootBounds ? entry.rootBounds.height : 0;
      const seen =
        entry.isIntersecting &&
        (entry.intersectionRatio >= 0.5 || (root && entry.intersectionRect.height >= root * 0.5));
      if (seen && seq) this.visible.set(entry.target, seq);
      else this.visible.delete(entry.target);
    }
    this.checkRead();
  }

  reading() {
    return (
      this.view === 'thread' &&
      (this.isOpen || this.inline) &&
      document.visibilityState === 'visible' &&
      this.client.thread(this.current).loaded
    );
  }

  checkRead() {
    if (!this.reading() || !this.visible.size) return;
    const seq = Math.max(...this.visible.values());
    this.client.markRead(this.current, seq);
  }

  receiptText(message) {
    const readers = this.client.readers(this.current, message.seq);
    const conv = this.client.conversation(this.current);
    const names = readers.map((p) => p.name || this.nameOf(conv, p.id));
    return names.length ? this.t('message.seenBy', { names: this.i18n.list(names) }) : this.t('message.sent');
  }

  // -- a message -------------------------------------------------------------------------------

  messageElement(conv, message, { grouped, newDay, receipt }) {
    const t = this.t;
    const me = this.client.user.id;
    const mine = Boolean(message.sender && message.sender.id === me);
    const system = !message.sender;
    const author = system
      ? t('message.system')
      : mine
        ? t('message.you')
        : message.sender.name || this.nameOf(conv, message.sender.id);
    const time = this.i18n.time(message.created_at);
    const classes = ['cw-msg', mine ? 'cw-mine' : 'cw-theirs'];
    if (system) classes.push('cw-system');
    if (message.deleted) classes.push('cw-deleted');
    if (message.local) classes.push('cw-pending');
    if (grouped) classes.push('cw-grouped');
    const article = h('article', {
      class: classes.join(' '),
      'data-testid': 'message',
      tabindex: '-1',
      dataset: message.local
        ? { id: message.id, state: message.status }
        : { id: message.id, seq: String(message.seq) },
      'aria-label': t('message.label', { author, time }),
      'aria-busy': message.status === 'sending' ? 'true' : null,
    });
    if (newDay) {
      article.append(
        h('div', { class: 'cw-day' }, h('span', { text: this.i18n.day(message.created_at) })),
      );
    }
    const stack = h('div', { class: 'cw-stack' });
    if (!grouped && !system) {
      stack.append(
        h(
          'div',
          { class: 'cw-meta', 'aria-hidden': 'true' },
          h('span', { class: 'cw-author', text: author }),
          h('time', { class: 'cw-time', datetime: message.created_at, title: this.i18n.full(message.created_at), text: time }),
        ),
      );
    }
    const bubble = h('div', { class: 'cw-bubble', title: this.i18n.full(message.created_at) });
    stack.append(bubble);
    if (message.deleted) {
      bubble.append(h('p', { class: 'cw-text', text: t('message.deleted') }));
    } else if (this.editing && this.editing.id === message.id) {
      bubble.append(this.editForm(message));
      if (message.attachments && message.attachments.length) {
        bubble.append(this.attachmentsElement(message));
      }
    } else {
      if (!filesOnly(message)) bubble.append(this.textElement(message.content, message.mentions));
      if (message.attachments && message.attachments.length) {
        bubble.append(this.attachmentsElement(message));
      }
      const card = previewCard(message.link_preview, { t, fresh: (image) => this.freshen(image) });
      if (card) bubble.append(card);
      if (message.edited_at) bubble.append(h('span', { class: 'cw-edited', text: t('message.edited') }));
    }
    if (!message.deleted) {
      const reactions = this.reactionsElement(message);
      if (reactions) stack.append(reactions);
    }
    if (message.pinned_at && !message.deleted) {
      stack.append(
        h('p', { class: 'cw-pinned', 'data-testid': 'pinned' }, icon('pin', 14), h('span', { text: t('pin.pinned') })),
      );
    }
    if (message.thread && message.thread.reply_count && !message.deleted) {
      stack.append(this.repliesButton(message));
    }
    if (message.local) stack.append(this.pendingStatus(message));
    if (receipt) stack.append(h('p', { class: 'cw-receipt', 'data-testid': 'receipt', text: receipt }));
    if (this.confirming === message.id) stack.append(this.confirmDelete(message));
    if (this.reporting === message.id) stack.append(this.reportForm(message));
    if (this.reported.has(message.id)) {
      stack.append(h('p', { class: 'cw-msg-status cw-reported', text: t('report.done') }));
    }
    const row = h('div', { class: 'cw-row' });
    if (!mine && !system) {
      row.append(grouped ? h('span', { class: 'cw-avatar-space' }) : this.avatar(message.sender, 28));
    }
    row.append(stack);
    if (this.hasActions(message)) {
      row.append(
        h(
          'button',
          {
            class: 'cw-icon-button cw-more',
            type: 'button',
            'aria-label': t('message.actions'),
            'aria-haspopup': 'menu',
            'data-testid': 'more',
            'data-focus-key': 'more',
            onclick: (event) => this.openMenu(message, event.currentTarget),
          },
          icon('more', 18),
        ),
      );
    }
    article.append(row);
    return article;
  }

  hasActions(message) {
    return Boolean(message.sender && !message.local && !message.deleted);
  }

  // Mentions from the message's entities (mentions.js), links found in the rest.
  textElement(content, mentions) {
    const p = h('p', { class: 'cw-text' });
    for (const piece of mentionParts(content, mentions)) {
      if (piece.userId) {
        p.append(h('span', { class: 'cw-mention', 'data-testid': 'mention', text: piece.text }));
      } else this.appendLinked(p, piece.text);
    }
    return p;
  }

  appendLinked(p, content) {
    for (const part of linkParts(content)) {
      p.append(
        part.href
          ? h('a', {
              class: 'cw-link-text',
              href: part.href,
              target: '_blank',
              rel: 'noopener noreferrer nofollow',
              referrerpolicy: 'no-referrer',
              text: part.text,
            })
          : document.createTextNode(part.text),
      );
    }
  }

  // -- threads (threads.js) and mentions (mentions.js) -------------------------------------------

  repliesButton(message) {
    const count = message.thread.reply_count;
    return h(
      'button',
      {
        class: 'cw-link cw-replies-button',
        type: 'button',
        'data-testid': 'thread-button',
        'data-focus-key': 'replies',
        onclick: (event) => this.openReplies(message, event.currentTarget),
      },
      this.t('replies.count', { count }),
    );
  }

  openReplies(message, opener) {
    this.closeMenu();
    if (this.replies) this.replies.close(false);
    this.replies = new ThreadView(this, this.current, message, opener);
    this.body.classList.add('cw-has-replies');
    this.replies.show(this.body);
  }

  closedReplies(view) {
    if (this.replies !== view) return;
    this.replies = null;
    this.body.classList.remove('cw-has-replies');
  }

  /** Who can be mentioned in a conversation: its participants but you. */
  mentionable(id) {
    const conv = this.client.conversation(id);
    const me = this.client.user.id;
    return ((conv && conv.participants) || [])
      .filter((p) => p.id !== me)
      .map((p) => ({ id: p.id, name: p.name || this.nameOf(conv, p.id) }));
  }

  reactionsElement(message) {
    const t = this.t;
    const entries = Object.entries(message.reactions || {}).filter(([, r]) => r.count > 0);
    if (!entries.length) return null;
    return h(
      'div',
      { class: 'cw-reactions', role: 'group', 'aria-label': t('reactions.label') },
      entries.map(([emoji, r]) => {
        const key = emojiKey(emoji);
        const name = key ? t(key) : emoji;
        return h(
          'button',
          {
            class: 'cw-reaction',
            type: 'button',
            'data-testid': 'reaction',
            'data-focus-key': `reaction:${emoji}`,
            'aria-pressed': String(Boolean(r.me)),
            'aria-label': t(r.me ? 'reaction.labelMine' : 'reaction.label', { name, count: r.count }),
            onclick: () => this.toggleReaction(message, emoji),
          },
          h('span', { class: 'cw-emoji-font', 'aria-hidden': 'true', text: emoji }),
          h('span', { class: 'cw-reaction-count', 'aria-hidden': 'true', text: this.i18n.number(r.count) }),
        );
      }),
    );
  }

  pendingStatus(message) {
    const t = this.t;
    if (message.status === 'sending') {
      return h('p', { class: 'cw-msg-status', text: t('message.sending') });
    }
    if (message.status === 'queued') {
      return h('p', { class: 'cw-msg-status', role: 'status', text: t('message.queued') });
    }
    return h(
      'p',
      { class: 'cw-msg-status cw-error', role: 'alert' },
      h('span', { text: `${this.errorText(message.error, 'message.failed')} ` }),
      h('button', {
        class: 'cw-link',
        type: 'button',
        'data-focus-key': 'retry',
        text: t('message.retry'),
        onclick: () => this.client.retry(this.current, message.id),
      }),
      h('button', {
        class: 'cw-link',
        type: 'button',
        'data-focus-key': 'discard',
        text: t('message.discard'),
        onclick: () => this.client.discard(this.current, message.id),
      }),
    );
  }

  // What went wrong, in the visitor's words (never the server's developer wording).
  errorText(error, fallback) {
    const status = error ? error.status : -1;
    const code = error ? error.code : '';
    if (code === 'frozen') return this.t('error.frozen');
    if (code === 'muted') return this.t('error.muted');
    if (code === 'message_blocked') return this.t('error.blocked');
    if (status === 0) return this.t('error.network');
    if (status === 429) return this.t('error.rateLimited');
    if (status === 403) return this.t('error.forbidden');
    if (status === 404) return this.t('error.notFound');
    if (status === 401) return this.t('session.endedText');
    return this.t(fallback);
  }

  // -- keyboard: the feed is one tab stop; arrows move between messages -----------------------

  articles() {
    return this.feed ? [...this.feed.children] : [];
  }

  updateRoving() {
    const items = this.articles();
    let current = this.roving && this.items.get(this.roving);
    if (!current || !current.el.isConnected) current = null;
    const target = current ? current.el : items[items.length - 1];
    for (const el of items) this.rove(el, el === target);
  }

  rove(el, on) {
    el.tabIndex = on ? 0 : -1;
    for (const control of el.querySelectorAll('button, a[href], select, textarea')) {
      control.tabIndex = on ? 0 : -1;
    }
  }

  setRoving(el) {
    if (!el) return;
    this.roving = el.dataset.id;
    for (const item of this.articles()) this.rove(item, item === el);
  }

  focusRoving() {
    const items = this.articles();
    const el = items.find((item) => item.tabIndex === 0) || items[items.length - 1];
    if (el) el.focus();
    else if (this.composer) this.composer.focus();
    return el;
  }

  onFeedFocus(event) {
    const article = event.target.closest('.cw-msg');
    if (article && this.roving !== article.dataset.id) this.setRoving(article);
    this.setActive(article);
  }

  onFeedKey(event) {
    const article = event.target.closest('.cw-msg');
    if (!article) return;
    const onArticle = event.target === article;
    if (!onArticle) {
      if (event.key === 'Escape' && !event.defaultPrevented && !this.menu) {
        if (event.target.closest('form')) return; // the form's own Escape
        event.preventDefault();
        article.focus();
      }
      return;
    }
    const items = this.articles();
    const index = items.indexOf(article);
    let next = null;
    switch (event.key) {
      case 'ArrowDown':
      case 'PageDown':
        next = items[index + 1];
        break;
      case 'ArrowUp':
      case 'PageUp':
        next = items[index - 1];
        if (!next) this.loadOlder();
        break;
      case 'Home':
        next = event.ctrlKey ? null : items[0];
        if (event.ctrlKey) this.title.focus();
        break;
      case 'End':
        next = event.ctrlKey ? null : items[items.length - 1];
        if (event.ctrlKey && this.composer) this.composer.focus();
        break;
      case 'Enter':
      case 'ContextMenu':
      case 'F10': {
        if (event.key === 'F10' && !event.shiftKey) return;
        const message = this.items.get(article.dataset.id);
        if (message && this.hasActions(message.message)) {
          event.preventDefault();
          this.openMenu(message.message, article);
        }
        return;
      }
      default:
        return;
    }
    event.preventDefault();
    if (next) {
      this.setRoving(next);
      next.focus();
      next.scrollIntoView({ block: 'nearest' });
    }
  }

  // One message's actions show at a time: the one under the pointer, else the focused one.
  setActive(article) {
    if (this.active === article) return;
    if (this.active) this.active.removeAttribute('data-active');
    this.active = article && article.isConnected ? article : null;
    if (!this.active) {
      const focused = this.feed && this.root.activeElement && this.root.activeElement.closest
        ? this.root.activeElement.closest('.cw-msg')
        : null;
      if (focused && this.feed.contains(focused)) this.active = focused;
    }
    if (this.active) this.active.setAttribute('data-active', '');
  }

  // -- touch: a long press opens a message's actions --------------------------------------------

  onPointerDown(event) {
    if (event.pointerType !== 'touch') return;
    const article = event.target.closest('.cw-msg');
    if (!article || event.target.closest('button, a, textarea, select, input')) return;
    const item = this.items.get(article.dataset.id);
    if (!item || !this.hasActions(item.message)) return;
    const start = { x: event.clientX, y: event.clientY };
    const cancel = () => {
      clearTimeout(timer);
      for (const [name, fn] of handlers) article.removeEventListener(name, fn);
    };
    const handlers = [
      ['pointerup', cancel],
      ['pointercancel', cancel],
      [
        'pointermove',
        (e) => Math.hypot(e.clientX - start.x, e.clientY - start.y) > 10 && cancel(),
      ],
    ];
    for (const [name, fn] of handlers) article.addEventListener(name, fn);
    const timer = setTimeout(() => {
      cancel();
      this.longPressed = Date.now();
      if (navigator.vibrate) navigator.vibrate(10);
      this.setRoving(article);
      this.openMenu(item.message, article, { sheet: true });
    }, LONG_PRESS_MS);
  }

  onContextMenu(event) {
    const article = event.target.closest('.cw-msg');
    if (!article || event.target.closest('a')) return;
    const item = this.items.get(article.dataset.id);
    if (!item || !this.hasActions(item.message)) return;
    event.preventDefault();
    if (this.longPressed && Date.now() - this.longPressed < 1000) return;
    this.openMenu(item.message, article, { sheet: matchMedia('(hover: none)').matches });
  }

  // -- a message's menu: reactions, edit, delete, report --------------------------------------

  openMenu(message, trigger, { sheet = false } = {}) {
    const t = this.t;
    this.closeMenu();
    const mine = message.sender && message.sender.id === this.client.user.id;
    const items = [];
    const item = (props, ...children) => {
      const el = h('button', { type: 'button', role: 'menuitem', class: 'cw-menu-item', ...props }, ...children);
      items.push(el);
      return el;
    };
    const quick = h(
      'div',
      { class: 'cw-menu-quick', role: 'group', 'aria-label': t('message.react') },
      QUICK.map(([emoji, key]) =>
        item({
          class: 'cw-menu-emoji cw-emoji-font',
          role: 'menuitemcheckbox',
          'aria-checked': String(Boolean(message.reactions && message.reactions[emoji] && message.reactions[emoji].me)),
          'aria-label': t(key),
          title: t(key),
          text: emoji,
          onclick: () => {
            this.closeMenu(true);
            this.toggleReaction(message, emoji);
          },
        }),
      ),
    );
    // An item that opens a form under the message (confirm a deletion, report).
    const opens = (testid, name, label, form, focus) =>
      item(
        {
          class: form === 'confirming' ? 'cw-menu-item cw-menu-danger' : 'cw-menu-item',
          'data-testid': testid,
          onclick: () => {
            this.closeMenu();
            this[form] = message.id;
            this.queue();
            queueMicrotask(() => this.focusIn(message.id, focus));
          },
        },
        icon(name, 18),
        h('span', { text: t(label) }),
      );
    const rest = [
      item(
        { 'data-testid': 'menu-react', onclick: () => this.openPicker(message, trigger) },
        icon('smile', 18),
        h('span', { text: t('message.moreReactions') }),
      ),
    ];
    rest.push(
      item(
        {
          'data-testid': 'menu-pin',
          onclick: () => {
            this.closeMenu(true);
            this.pin(message, !message.pinned_at);
          },
        },
        icon('pin', 18),
        h('span', { text: t(message.pinned_at ? 'pin.unpin' : 'pin.pin') }),
      ),
    );
    if (!message.parent_id) {
      rest.push(
        item(
          { 'data-testid': 'menu-thread', onclick: () => this.openReplies(message, trigger) },
          icon('chat', 18),
          h('span', { text: t('replies.reply') }),
        ),
      );
    }
    if (mine) {
      rest.push(
        item(
          {
            'data-testid': 'menu-edit',
            onclick: () => {
              this.closeMenu();
              this.startEdit(message);
            },
          },
          icon('edit', 18),
          h('span', { text: t('message.edit') }),
        ),
        opens('menu-delete', 'trash', 'message.delete', 'confirming', '[data-focus-key="cancel-delete"]'),
      );
    } else if (!this.reported.has(message.id)) {
      rest.push(opens('menu-report', 'flag', 'message.report', 'reporting', 'select'));
    }
    const menu = { kind: 'cw-menu', label: 'message.actions', testid: 'message-menu', items };
    this.showMenu(menu, [quick, h('div', { class: 'cw-menu-list' }, rest)], trigger, sheet);
  }

  openPicker(message, trigger) {
    const t = this.t;
    const sheet = Boolean(this.menu && this.menu.sheet);
    this.closeMenu();
    const buttons = EMOJI.map(([emoji, key]) =>
      h('button', {
        class: 'cw-emoji cw-emoji-font',
        type: 'button',
        role: 'menuitem',
        'aria-label': t(key),
        title: t(key),
        text: emoji,
        onclick: () => {
          this.closeMenu(true);
          this.toggleReaction(message, emoji);
        },
      }),
    );
    const picker = { kind: 'cw-picker', label: 'picker.label', testid: 'emoji-picker', items: buttons, columns: 6 };
    this.showMenu(picker, buttons, trigger, sheet);
  }

  // A menu (role menu) by the trigger, or as a sheet from the bottom of the panel.
  showMenu({ kind, label, testid, items, columns = 0 }, children, trigger, sheet) {
    const el = h(
      'div',
      {
        class: sheet ? `${kind} cw-sheet` : kind,
        role: 'menu',
        'aria-label': this.t(label),
        'data-testid': testid,
        onkeydown: (event) => this.menuKey(event, items, columns),
      },
      children,
    );
    const first = items[0];
    this.menu = { el, trigger, sheet };
    this.panel.append(el);
    if (sheet) {
      // A tap on the scrim closes the sheet; the end of the long press that opened it
      // (which began before the scrim was there) does not.
      let pressed = false;
      this.scrim = h('div', {
        class: 'cw-scrim',
        onpointerdown: () => {
          pressed = true;
        },
        onclick: () => pressed && this.closeMenu(true),
      });
      el.before(this.scrim);
    } else {
      const box = this.panel.getBoundingClientRect();
      const at = trigger.getBoundingClientRect();
      const width = el.offsetWidth;
      const height = el.offsetHeight;
      const rtl = this.i18n.dir === 'rtl';
      const x = rtl ? at.left - box.left : at.right - box.left - width;
      const left = Math.max(8, Math.min(x, box.width - width - 8));
      const below = at.bottom - box.top + 4;
      const top = below + height < box.height - 8 ? below : Math.max(8, at.top - box.top - height - 4);
      el.style.left = `${left}px`;
      el.style.top = `${top}px`;
    }
    first.focus();
    this.menuOutside = (event) => {
      const path = event.composedPath();
      if (!path.includes(el) && !path.includes(trigger)) this.closeMenu();
    };
    document.addEventListener('pointerdown', this.menuOutside, true);
  }

  menuKey(event, items, columns = 0) {
    const index = items.indexOf(event.target);
    const steps = columns
      ? { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns, ArrowUp: -columns }
      : { ArrowRight: 1, ArrowLeft: -1, ArrowDown: 1, ArrowUp: -1 };
    if (this.i18n.dir === 'rtl') [steps.ArrowRight, steps.ArrowLeft] = [steps.ArrowLeft, steps.ArrowRight];
    let next = null;
    if (event.key in steps && index >= 0) next = items[(index + steps[event.key] + items.length) % items.length];
    else if (event.key === 'Home') next = items[0];
    else if (event.key === 'End') next = items[items.length - 1];
    else if (event.key === 'Escape' || event.key === 'Tab') {
      event.preventDefault();
      event.stopPropagation();
      this.closeMenu(true);
      return;
    }
    if (next) {
      event.preventDefault();
      next.focus();
    }
  }

  closeMenu(returnFocus = false) {
    if (!this.menu) return;
    const { el, trigger } = this.menu;
    this.menu = null;
    el.remove();
    if (this.scrim) this.scrim.remove();
    this.scrim = null;
    document.removeEventListener('pointerdown', this.menuOutside, true);
    if (returnFocus && trigger) {
      const target = trigger.isConnected ? trigger : this.focusTarget(trigger);
      if (target) target.focus();
    }
  }

  // The element standing for `old` after a redraw (same message, same control).
  focusTarget(old) {
    const article = old.closest && old.closest('.cw-msg');
    const item = article && this.items.get(article.dataset.id);
    if (!item) return null;
    const key = old.dataset.focusKey;
    return (key && item.el.querySelector(`[data-focus-key="${CSS.escape(key)}"]`)) || item.el;
  }

  focusIn(messageId, selector) {
    const item = this.items.get(messageId);
    const target = item && item.el.querySelector(selector);
    if (target) target.focus();
  }

  // -- actions -----------------------------------------------------------------------------------

  async pin(message, pinned) {
    try {
      await this.client.pin(this.current, message.id, pinned);
    } catch (error) {
      const status = error ? error.status : -1;
      const key = status === 409 ? 'pin.full' : status === 403 ? 'pin.forbidden' : null;
      this.composerNote(key ? this.t(key) : this.errorText(error, 'pin.failed'));
    }
  }

  async toggleReaction(message, emoji) {
    try {
      await this.client.toggleReaction(this.current, message.id, emoji);
    } catch (error) {
      this.composerNote(this.errorText(error, 'notSaved.reaction'));
    }
  }

  startEdit(message) {
    this.editing = { id: message.id };
    this.syncThread();
    const item = this.items.get(message.id);
    const input = item && item.el.querySelector('.cw-edit-input');
    if (input) {
      input.focus();
      input.setSelectionRange(input.value.length, input.value.length);
    }
  }

  stopEdit(message) {
    this.closeForm('editing', message);
  }

  // Closes the form under a message (editing, confirming, reporting): back to its "…".
  closeForm(form, message) {
    this[form] = null;
    this.syncThread();
    this.focusIn(message.id, '[data-focus-key="more"]');
  }

  editForm(message) {
    const t = this.t;
    const caption = filesOnly(message);
    const note = h('p', { class: 'cw-note', role: 'status' });
    const input = h('textarea', {
      class: 'cw-edit-input',
      'aria-label': t(caption ? 'edit.caption' : 'edit.label'),
      placeholder: caption ? t('edit.caption') : null,
      value: caption ? '' : message.content,
      oninput: () => {
        note.textContent = this.limitText(input.value, true);
      },
    });
    const save = () => {
      const text = input.value.trim();
      if (codePoints(text) > MAX_CONTENT) {
        note.textContent = this.limitText(text, true);
        return;
      }
      this.saveEdit(message, text);
    };
    const form = h(
      'form',
      {
        class: 'cw-edit',
        onsubmit: (event) => {
          event.preventDefault();
          save();
        },
      },
      input,
      note,
      h(
        'div',
        { class: 'cw-edit-buttons' },
        h('button', { class: 'cw-link', type: 'submit', text: t('action.save') }),
        h('button', {
          class: 'cw-link',
          type: 'button',
          text: t('action.cancel'),
          onclick: () => this.stopEdit(message),
        }),
      ),
    );
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        save();
      } else {
        onEscape(() => this.stopEdit(message))(event);
      }
    });
    return form;
  }

  async saveEdit(message, text) {
    const unchanged = filesOnly(message) ? !text : text === message.content;
    this.editing = null;
    if (!text || unchanged) {
      this.stopEdit(message);
      return;
    }
    const edit = this.client.edit(this.current, message.id, text);
    this.focusIn(message.id, '[data-focus-key="more"]');
    try {
      await edit;
    } catch (error) {
      this.composerNote(this.errorText(error, 'notSaved.edit'));
    }
  }

  confirmDelete(message) {
    const t = this.t;
    const cancel = () => this.closeForm('confirming', message);
    return h(
      'div',
      {
        class: 'cw-confirm',
        role: 'group',
        'aria-label': t('delete.confirm'),
        onkeydown: onEscape(cancel),
      },
      h('span', { text: t('delete.confirm') }),
      h('button', {
        class: 'cw-danger',
        type: 'button',
        'data-testid': 'confirm-delete',
        text: t('delete.yes'),
        onclick: () => this.deleteMessage(message),
      }),
      h('button', {
        class: 'cw-link',
        type: 'button',
        'data-focus-key': 'cancel-delete',
        text: t('action.cancel'),
        onclick: cancel,
      }),
    );
  }

  async deleteMessage(message) {
    this.confirming = null;
    try {
      await this.client.remove(this.current, message.id);
      const item = this.items.get(message.id);
      if (item) item.el.focus();
      else this.focusRoving();
    } catch (error) {
      this.syncThread();
      this.composerNote(this.errorText(error, 'notSaved.delete'));
    }
  }

  reportForm(message) {
    const t = this.t;
    const select = h(
      'select',
      { 'aria-label': t('report.label') },
      REPORT_REASONS.map(([value, key]) => h('option', { value, text: t(key) })),
    );
    const status = h('span', { class: 'cw-report-status', role: 'status' });
    const cancel = () => this.closeForm('reporting', message);
    return h(
      'form',
      {
        class: 'cw-report',
        onsubmit: async (event) => {
          event.preventDefault();
          try {
            await this.client.report(message.id, select.value);
            this.reporting = null;
            this.reported.add(message.id);
            this.items.delete(message.id);
            this.syncThread();
            const item = this.items.get(message.id);
            if (item) item.el.focus();
          } catch (error) {
            status.textContent = this.errorText(error, 'report.failed');
          }
        },
        onkeydown: onEscape(cancel),
      },
      select,
      h('button', { class: 'cw-danger', type: 'submit', 'data-testid': 'send-report', text: t('report.send') }),
      h('button', { class: 'cw-link', type: 'button', text: t('action.cancel'), onclick: cancel }),
      status,
    );
  }

  // -- attachments: fresh URLs whenever one is opened ------------------------------------------

  attachmentsElement(message) {
    return h(
      'div',
      { class: 'cw-attachments' },
      message.attachments.map((attachment) => this.attachmentElement(message, attachment)),
    );
  }

  // The URLs to show: fresh ones if we asked for them since, else the message's.
  urlsOf(attachment) {
    const fresh = this.fresh.get(attachment.id);
    const use = fresh && (!attachment.url || fresh.expiresAt > Date.now()) ? fresh : attachment;
    const url = safeUrl(use.url);
    return { url, thumb: safeUrl(use.thumbnail_url) || url, expiresAt: use.expiresAt || 0 };
  }

  freshStamp(message) {
    return (message.attachments || [])
      .map((a) => (this.fresh.has(a.id) ? this.fresh.get(a.id).expiresAt : 0))
      .join(',');
  }

  /** Asks for fresh URLs (one request per attachment at a time) and redraws its message. */
  freshen(attachment) {
    if (!this.asking.has(attachment.id)) {
      const asking = this.client
        .attachment(attachment.id)
        .then((fresh) => {
          this.fresh.set(attachment.id, fresh);
          this.queue();
          return fresh;
        })
        .finally(() => this.asking.delete(attachment.id));
      this.asking.set(attachment.id, asking);
    }
    return this.asking.get(attachment.id);
  }

  attachmentElement(message, attachment) {
    const t = this.t;
    const { url, thumb } = this.urlsOf(attachment);
    const size = this.i18n.size(attachment.size);
    const label = [attachment.filename, size].filter(Boolean).join(' · ');
    const image = String(attachment.content_type).startsWith('image/');
    if (!url && !thumb) {
      // Real-time frames carry attachments without URLs (per reader, expiring): ask.
      if (!message.local) this.freshen(attachment).catch(() => {});
      return h(
        'span',
        { class: 'cw-file-link', dataset: { attachment: attachment.id } },
        icon('file', 16),
        h('span', { text: label }),
      );
    }
    if (image && thumb) {
      // Its box is known before it loads (no jump), scaled into 220 × 180.
      const { width, height } = attachment;
      const scale = width && height ? Math.min(1, 220 / width, 180 / height) : 0;
      const img = h('img', {
        class: 'cw-thumb-image',
        src: thumb,
        alt: attachment.filename,
        width: scale ? Math.round(width * scale) : null,
        height: scale ? Math.round(height * scale) : null,
      });
      img.addEventListener(
        'error',
        () => {
          if (!message.local) this.freshen(attachment).catch(() => {
            img.alt = t('attachment.unavailable', { name: attachment.filename });
          });
        },
        { once: true },
      );
      img.addEventListener('load', () => this.pinned && this.scrollToBottom(), { once: true });
      const button = h(
        'button',
        {
          class: 'cw-thumb',
          type: 'button',
          'aria-label': t('attachment.open', { name: attachment.filename }),
          'data-focus-key': `attachment:${attachment.id}`,
          dataset: { attachment: attachment.id },
          onclick: () => this.openLightbox(attachment, button),
        },
        img,
      );
      return button;
    }
    const link = h(
      'a',
      {
        class: 'cw-file-link',
        href: url,
        target: '_blank',
        rel: 'noopener noreferrer',
        referrerpolicy: 'no-referrer',
        'data-focus-key': `attachment:${attachment.id}`,
        dataset: { attachment: attachment.id },
        onclick: (event) => {
          if (event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
          event.preventDefault();
          this.openFile(attachment, link);
        },
        // A new tab by the browser's own means takes the href: keep it current.
        onpointerenter: () => this.keepFresh(attachment, link),
        onfocus: () => this.keepFresh(attachment, link),
      },
      icon('download', 16),
      h('span', { text: label }),
    );
    return link;
  }

  keepFresh(attachment, link) {
    if (this.urlsOf(attachment).expiresAt > Date.now() + REFRESH_BEFORE_MS) return;
    this.freshen(attachment)
      .then((fresh) => {
        const url = safeUrl(fresh.url);
        if (url) link.href = url;
      })
      .catch(() => {});
  }

  async openFile(attachment, link) {
    link.setAttribute('aria-busy', 'true');
    try {
      const fresh = await this.client.attachment(attachment.id);
      this.fresh.set(attachment.id, fresh);
      const url = safeUrl(fresh.url);
      if (!url) throw new Error('no URL');
      link.href = url;
      // A link of our own, opened in the click's turn: a new tab or a download.
      const opener = h('a', { href: url, target: '_blank', rel: 'noopener noreferrer', hidden: true });
      this.root.append(opener);
      opener.click();
      opener.remove();
    } catch (error) {
      this.composerNote(this.errorText(error, 'attachment.failed'));
    } finally {
      link.removeAttribute('aria-busy');
    }
  }

  async openLightbox(attachment, trigger) {
    const t = this.t;
    const { thumb } = this.urlsOf(attachment);
    this.lightboxReturn = trigger;
    this.lightboxFor = attachment.id;
    this.lightboxImage.alt = attachment.filename;
    if (thumb) this.lightboxImage.src = thumb; // until the full image comes
    else this.lightboxImage.removeAttribute('src');
    this.lightboxCaption.textContent = attachment.filename;
    this.lightboxNote.textContent = t('lightbox.loading');
    this.lightbox.hidden = false;
    this.lightboxClose.focus();
    try {
      const fresh = await this.client.attachment(attachment.id);
      this.fresh.set(attachment.id, fresh);
      const url = safeUrl(fresh.url);
      if (!url) throw new Error('no URL');
      if (this.lightboxFor !== attachment.id || this.lightbox.hidden) return;
      await new Promise((resolve, reject) => {
        const full = new Image();
        full.onload = resolve;
        full.onerror = reject;
        full.src = url;
      });
      if (this.lightboxFor !== attachment.id || this.lightbox.hidden) return;
      this.lightboxImage.src = url;
      this.lightboxNote.textContent = '';
    } catch (error) {
      if (this.lightboxFor === attachment.id) {
        this.lightboxNote.textContent = this.errorText(error, 'attachment.failed');
      }
    }
  }

  closeLightbox() {
    this.lightbox.hidden = true;
    this.lightboxFor = null;
    this.lightboxImage.removeAttribute('src');
    if (this.lightboxReturn) {
      const target = this.lightboxReturn.isConnected ? this.lightboxReturn : this.focusTarget(this.lightboxReturn);
      if (target) target.focus();
    }
  }

  // Back in a tab after a while: URLs shown that have expired (or are about to) are renewed.
  refreshExpired() {
    if (this.view !== 'thread') return;
    const soon = Date.now() + REFRESH_BEFORE_MS;
    for (const message of this.client.messages(this.current)) {
      for (const attachment of message.attachments || []) {
        if (message.local) continue;
        const { url, expiresAt } = this.urlsOf(attachment);
        if (url && expiresAt < soon) this.freshen(attachment).catch(() => {});
      }
    }
  }

  // -- the composer --------------------------------------------------------------------------------

  buildComposer() {
    const t = this.t;
    this.composer = h('textarea', {
      class: 'cw-input',
      rows: '1',
      placeholder: t('composer.placeholder'),
      'aria-label': t('composer.label'),
      'aria-describedby': 'cw-note',
      'data-testid': 'composer',
      oninput: () => this.onComposerInput(),
      onkeydown: (event) => {
        if (this.mentionPicker.onKey(event)) return;
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.submit();
        }
      },
      onpaste: (event) => this.onPaste(event),
      onblur: () => this.current && this.client.stopTypingSignal(this.current),
    });
    this.fileInput = h('input', {
      type: 'file',
      multiple: true,
      class: 'cw-file',
      tabindex: '-1',
      'aria-hidden': 'true',
      'data-testid': 'file-input',
      onchange: () => {
        const files = [...this.fileInput.files];
        this.fileInput.value = '';
        this.addFiles(files);
      },
    });
    this.uploadsEl = h('ul', { class: 'cw-uploads', 'aria-label': t('uploads.label') });
    this.note = h('p', { class: 'cw-note', id: 'cw-note', role: 'status', 'data-testid': 'note' });
    this.attachButton = h(
      'button',
      {
        class: 'cw-icon-button',
        type: 'button',
        'aria-label': t('composer.attach'),
        'data-testid': 'attach',
        onclick: () => this.fileInput.click(),
      },
      icon('attach'),
    );
    this.sendButton = h(
      'button',
      { class: 'cw-send', type: 'submit', 'data-testid': 'send', 'aria-label': t('composer.send') },
      icon('send'),
    );
    this.sendButton.firstChild.classList.add('cw-flip');
    const form = h(
      'form',
      {
        class: 'cw-composer',
        onsubmit: (event) => {
          event.preventDefault();
          this.submit();
        },
      },
      this.uploadsEl,
      h('div', { class: 'cw-composer-row' }, this.attachButton, this.fileInput, this.composer, this.sendButton),
      this.note,
    );
    this.renderUploads();
    this.mentionPicker = new MentionPicker(this.composer, {
      people: () => this.mentionable(this.current),
      t,
      anchor: form,
    });
    return form;
  }

  renderComposerState(thread) {
    if (!this.composer) return;
    const ready = thread.loaded && this.client.session.state === 'active';
    for (const el of [this.composer, this.attachButton]) el.disabled = !ready;
    this.sendButton.disabled = !ready || this.overLimit();
  }

  overLimit() {
    return Boolean(this.composer) && codePoints(this.composer.value.trim()) > MAX_CONTENT;
  }

  limitText(text, editing = false) {
    const count = codePoints(editing ? text : text.trim());
    if (count > MAX_CONTENT) {
      return this.t('composer.tooLong', { count: count - MAX_CONTENT, max: MAX_CONTENT });
    }
    if (count > MAX_CONTENT - NEAR_LIMIT) return this.t('composer.left', { count: MAX_CONTENT - count });
    return '';
  }

  onComposerInput() {
    this.autosize();
    const value = this.composer.value;
    if (value.length) this.client.typing(this.current);
    else this.client.stopTypingSignal(this.current);
    const over = this.overLimit();
    this.composer.setAttribute('aria-invalid', String(over));
    this.sendButton.disabled = over || this.composer.disabled;
    this.composerNote(this.limitText(value), over);
  }

  composerNote(text, error = true) {
    if (!this.note) return;
    this.note.textContent = text;
    this.note.classList.toggle('cw-note-info', !error);
  }

  autosize() {
    const input = this.composer;
    input.style.height = 'auto';
    input.style.height = `${Math.min(input.scrollHeight, 140)}px`;
  }

  submit() {
    const id = this.current;
    const thread = this.client.thread(id);
    if (!this.composer || !thread.loaded || this.composer.disabled) return;
    const text = this.composer.value.trim();
    if (codePoints(text) > MAX_CONTENT) {
      this.composerNote(this.limitText(text));
      return;
    }
    if (this.uploads.some((u) => u.state === 'uploading')) {
      this.composerNote(this.t('composer.waitUpload'));
      return;
    }
    const done = this.uploads.filter((u) => u.state === 'done');
    if (!text && !done.length) return;
    const mentions = this.mentionPicker.take(text);
    this.client.send(id, { content: text, attachments: done.map((u) => u.attachment), mentions });
    this.composer.value = '';
    this.composer.setAttribute('aria-invalid', 'false');
    this.autosize();
    this.clearUploads();
    this.composerNote('');
    this.scrollToBottom();
  }

  // -- files: the button, drag and drop, paste ---------------------------------------------------

  canAttach() {
    return this.view === 'thread' && this.composer && !this.composer.disabled;
  }

  onDrag(event) {
    if (!this.canAttach() || !hasFiles(event.dataTransfer)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    this.drop.hidden = false;
  }

  onDragLeave(event) {
    if (!this.panel.contains(event.relatedTarget)) this.drop.hidden = true;
  }

  onDrop(event) {
    this.drop.hidden = true;
    if (!this.canAttach() || !hasFiles(event.dataTransfer)) return;
    event.preventDefault();
    this.addFiles([...event.dataTransfer.files]);
    this.composer.focus();
  }

  onPaste(event) {
    const files = event.clipboardData ? [...event.clipboardData.files] : [];
    if (!files.length || !this.canAttach()) return;
    // Files pasted are attached; text pasted with them still goes in as text.
    if (!event.clipboardData.types.includes('text/plain')) event.preventDefault();
    this.addFiles(files);
  }

  async addFiles(files) {
    const id = this.current;
    for (const file of files) {
      const upload = { key: randomId(), name: file.name, state: 'uploading', preview: null };
      if (String(file.type).startsWith('image/')) upload.preview = URL.createObjectURL(file);
      this.uploads.push(upload);
      this.renderUploads();
      try {
        upload.attachment = await this.client.upload(id, file);
        upload.state = 'done';
      } catch (error) {
        upload.state = 'failed';
        upload.error = this.uploadError(error);
      }
      if (this.current === id) this.renderUploads();
    }
  }

  uploadError(error) {
    const byStatus = { 413: 'upload.tooLarge', 415: 'upload.type', 422: 'upload.damaged', 404: 'upload.unavailable', 405: 'upload.unavailable' };
    return byStatus[error.status] ? this.t(byStatus[error.status]) : this.errorText(error, 'upload.failed');
  }

  removeUpload(key) {
    const upload = this.uploads.find((u) => u.key === key);
    if (upload && upload.preview) URL.revokeObjectURL(upload.preview);
    this.uploads = this.uploads.filter((u) => u.key !== key);
    this.renderUploads();
    if (this.composer) this.composer.focus();
  }

  clearUploads() {
    for (const upload of this.uploads) if (upload.preview) URL.revokeObjectURL(upload.preview);
    this.uploads = [];
    this.renderUploads();
  }

  renderUploads() {
    if (!this.uploadsEl) return;
    const t = this.t;
    clear(this.uploadsEl);
    this.uploadsEl.hidden = this.uploads.length === 0;
    for (const upload of this.uploads) {
      const state = upload.state === 'uploading' ? t('upload.uploading') : upload.state === 'failed' ? upload.error : '';
      const thumb = h('span', { class: 'cw-upload-thumb', 'aria-hidden': 'true' }, icon('file'));
      if (upload.preview && upload.state !== 'failed') {
        // Shown only once it decodes: a file that is not really an image keeps the icon.
        const img = h('img', { class: 'cw-upload-preview', alt: '' });
        img.addEventListener('load', () => thumb.replaceChildren(img), { once: true });
        img.src = upload.preview;
      }
      this.uploadsEl.append(
        h(
          'li',
          { class: `cw-upload cw-upload-${upload.state}`, 'data-testid': 'upload' },
          thumb,
          h(
            'span',
            { class: 'cw-upload-text' },
            h('span', { class: 'cw-upload-name', text: upload.name }),
            state
              ? h('span', { class: 'cw-upload-state', role: upload.state === 'failed' ? 'alert' : null, text: state })
              : null,
          ),
          h(
            'button',
            {
              class: 'cw-icon-button cw-small',
              type: 'button',
              'aria-label': t('upload.remove', { name: upload.name }),
              onclick: () => this.removeUpload(upload.key),
            },
            icon('close', 16),
          ),
        ),
      );
    }
  }

  renderTyping() {
    if (!this.typingEl) return;
    const conv = this.client.conversation(this.current);
    const names = this.client
      .typingUsers(this.current)
      .map((u) => u.name || (conv ? this.nameOf(conv, u.id) : ''));
    this.typingEl.hidden = names.length === 0;
    this.typingEl.textContent = !names.length
      ? ''
      : names.length > 3
        ? this.t('typing.many')
        : this.t('typing.some', { count: names.length, names: this.i18n.list(names) });
  }
}

// Messages one after another from one sender, a few minutes apart, on one day: one group.
function sameGroup(previous, message, i18n) {
  if (!previous || !previous.sender || !message.sender) return false;
  if (previous.sender.id !== message.sender.id || previous.deleted || message.deleted) return false;
  const gap = new Date(message.created_at) - new Date(previous.created_at);
  return gap >= 0 && gap < GROUP_MS && i18n.sameDay(previous.created_at, message.created_at);
}

// A message of files only (the widget names them in its content) shows no text, until
// an edit gives it a caption.
function filesOnly(message) {
  const files = message.attachments || [];
  const meta = message.metadata && message.metadata.confab_widget;
  if (!files.length || !meta || !meta.attachments_only || message.edited_at) return false;
  return true;
}

// A keydown handler: Escape does `then` (and goes no further).
function onEscape(then) {
  return (event) => {
    if (event.key !== 'Escape') return;
    event.preventDefault();
    event.stopPropagation();
    then();
  };
}

function hasFiles(transfer) {
  return Boolean(transfer && [...transfer.types].includes('Files'));
}

function smooth() {
  return matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth';
}
