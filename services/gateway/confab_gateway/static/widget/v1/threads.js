// The thread view: a top-level message and its replies, over the conversation.
//
// - Replies are conversation events like any message: the client applies them in seq
//   order with no gap and no duplicate (its feed catches up after a reconnect) and hands
//   them here ('event'); this view only keeps those of its parent, by id, so an event
//   seen twice or a page that overlaps them changes nothing.
// - A reply is sent with a client_msg_id made once: sending it again after a failure
//   (the Retry button) can never post it twice.
// - Opening the view moves the focus to its heading; Escape or the back button closes it
//   and gives the focus back to what opened it. The replies are a list; the composer
//   suggests participants on "@" (mentions.js). Everything is text nodes (dom.js).

import { codePoints, MAX_CONTENT, randomId } from './client.js';
import { h, icon } from './dom.js';
import { MentionPicker } from './mentions.js';

export class ThreadView {
  constructor(widget, conversationId, parent, opener) {
    this.w = widget;
    this.client = widget.client;
    this.t = widget.t;
    this.conversationId = conversationId;
    this.parent = parent;
    this.opener = opener;
    this.replies = new Map(); // id -> message
    this.pending = new Map(); // client_msg_id -> local copy
    this.hasMore = false;
    this.loading = true;
    this.error = null;
    this.offEvent = this.client.on('event', (detail) => this.onEvent(detail));
    this.build();
  }

  build() {
    const t = this.t;
    this.heading = h('h3', { class: 'cw-replies-title', tabindex: '-1', text: t('replies.title') });
    this.parentEl = h('div', { class: 'cw-replies-parent' });
    this.list = h('ul', { class: 'cw-replies-list', 'aria-label': t('replies.list'), 'data-testid': 'replies' });
    this.more = h('button', {
      class: 'cw-link',
      type: 'button',
      hidden: true,
      'data-testid': 'replies-older',
      text: t('replies.older'),
      onclick: () => this.load(true),
    });
    this.stateEl = h('p', { class: 'cw-replies-state', role: 'status' });
    this.input = h('textarea', {
      class: 'cw-input',
      rows: '1',
      placeholder: t('replies.placeholder'),
      'aria-label': t('replies.composer'),
      'data-testid': 'reply-composer',
      onkeydown: (event) => {
        if (this.picker.onKey(event)) return;
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.submit();
        }
      },
    });
    const form = h(
      'form',
      {
        class: 'cw-composer cw-replies-composer',
        onsubmit: (event) => {
          event.preventDefault();
          this.submit();
        },
      },
      h(
        'div',
        { class: 'cw-composer-row' },
        this.input,
        h(
          'button',
          { class: 'cw-send', type: 'submit', 'aria-label': t('replies.send'), 'data-testid': 'reply-send' },
          icon('send'),
        ),
      ),
    );
    this.el = h(
      'section',
      {
        class: 'cw-replies',
        'aria-label': t('replies.title'),
        'data-testid': 'thread-view',
        onkeydown: (event) => {
          if (event.key === 'Escape' && !this.picker.open) {
            event.stopPropagation();
            this.close();
          }
        },
      },
      h(
        'div',
        { class: 'cw-replies-header' },
        h(
          'button',
          {
            class: 'cw-icon-button',
            type: 'button',
            'aria-label': t('replies.close'),
            'data-testid': 'thread-close',
            onclick: () => this.close(),
          },
          icon('back'),
        ),
        this.heading,
      ),
      h('div', { class: 'cw-replies-scroll' }, this.parentEl, this.more, this.stateEl, this.list),
      form,
    );
    this.picker = new MentionPicker(this.input, {
      people: () => this.w.mentionable(this.conversationId),
      t,
      anchor: form,
    });
  }

  show(container) {
    container.append(this.el);
    this.draw();
    this.heading.focus();
    return this.load(false);
  }

  async load(older) {
    const before = older ? Math.min(...[...this.replies.values()].map((m) => m.seq)) : undefined;
    this.loading = true;
    this.draw();
    try {
      const page = await this.client.api.thread(this.conversationId, this.parent.id, { before });
      this.parent = page.parent;
      for (const m of page.data) if (!this.replies.has(m.id)) this.replies.set(m.id, m);
      if (!older || !page.has_more) this.hasMore = page.has_more;
      this.error = null;
    } catch (error) {
      this.error = error;
    }
    this.loading = false;
    this.draw();
    this.markRead();
  }

  onEvent({ conversationId, name, data }) {
    if (conversationId !== this.conversationId || !this.el.isConnected) return;
    if (data.id === this.parent.id && name === 'message.updated') {
      this.parent = { ...this.parent, ...data };
    } else if (data.parent_id === this.parent.id && name !== 'message.read') {
      if (name === 'message.deleted') {
        const found = this.replies.get(data.id);
        if (found) this.replies.set(data.id, { ...found, content: '', deleted: true, mentions: [] });
      } else if (name === 'message.created' || name === 'message.updated') {
        this.replies.set(data.id, { ...(this.replies.get(data.id) || {}), ...data });
        if (data.client_msg_id) this.pending.delete(data.client_msg_id);
        if (name === 'message.created') this.markRead();
      }
    } else if (name === 'message.deleted' && this.replies.has(data.id)) {
      this.replies.set(data.id, { ...this.replies.get(data.id), content: '', deleted: true });
    } else return;
    this.draw();
  }

  markRead() {
    const me = this.client.user.id;
    const seqs = [...this.replies.values()].filter((m) => !m.sender || m.sender.id !== me).map((m) => m.seq);
    const last = Math.max(0, ...seqs);
    if (last > (this.readSent || 0)) {
      this.readSent = last;
      this.client.api.read(this.conversationId, last, this.parent.id).catch(() => {
        this.readSent = 0;
      });
    }
  }

  submit() {
    const text = this.input.value.trim();
    if (!text) return;
    if (codePoints(text) > MAX_CONTENT) {
      this.stateEl.textContent = this.t('composer.tooLong', { count: codePoints(text) - MAX_CONTENT, max: MAX_CONTENT });
      return;
    }
    const clientId = randomId();
    const me = this.client.user;
    const local = {
      id: `local:${clientId}`,
      client_msg_id: clientId,
      parent_id: this.parent.id,
      sender: { id: me.id, name: me.name },
      content: text,
      mentions: this.picker.take(text),
      created_at: new Date().toISOString(),
      status: 'sending',
    };
    this.pending.set(clientId, local);
    this.input.value = '';
    this.draw();
    this.deliver(clientId);
  }

  async deliver(clientId) {
    const local = this.pending.get(clientId);
    if (!local) return;
    this.pending.set(clientId, { ...local, status: 'sending' });
    this.draw();
    const body = { content: local.content, client_msg_id: clientId, parent_id: this.parent.id };
    if (local.mentions.length) body.mentions = local.mentions;
    try {
      const saved = await this.client.api.sendMessage(this.conversationId, body);
      this.pending.delete(clientId);
      this.replies.set(saved.id, { ...(this.replies.get(saved.id) || {}), ...saved });
    } catch {
      if (this.pending.has(clientId)) this.pending.set(clientId, { ...local, status: 'failed' });
    }
    this.draw();
  }

  item(message, tag = 'li') {
    const t = this.t;
    const conv = this.client.conversation(this.conversationId);
    const mine = message.sender && message.sender.id === this.client.user.id;
    const author = !message.sender
      ? t('message.system')
      : mine
        ? t('message.you')
        : message.sender.name || this.w.nameOf(conv, message.sender.id);
    const li = h(tag, {
      class: 'cw-reply',
      'data-testid': tag !== 'li' ? 'thread-parent' : message.status ? 'reply-pending' : 'reply',
      dataset: { id: message.id },
    });
    li.append(
      h(
        'div',
        { class: 'cw-reply-meta' },
        h('span', { class: 'cw-author', text: author }),
        ' ',
        h('time', { class: 'cw-time', datetime: message.created_at, text: this.w.i18n.time(message.created_at) }),
      ),
    );
    if (message.deleted) li.append(h('p', { class: 'cw-text', text: t('message.deleted') }));
    else li.append(this.w.textElement(message.content, message.mentions));
    if (message.status === 'sending') li.append(h('p', { class: 'cw-msg-status', text: t('message.sending') }));
    if (message.status === 'failed') {
      li.append(
        h(
          'p',
          { class: 'cw-msg-status cw-error', role: 'alert' },
          h('span', { text: t('message.failed') }),
          ' ',
          h('button', {
            class: 'cw-link',
            type: 'button',
            text: t('action.retry'),
            onclick: () => this.deliver(message.client_msg_id),
          }),
        ),
      );
    }
    return li;
  }

  draw() {
    const t = this.t;
    this.parentEl.replaceChildren(this.item(this.parent, 'div'));
    const replies = [...this.replies.values()].sort((a, b) => a.seq - b.seq);
    this.list.replaceChildren(...replies.map((m) => this.item(m)), ...[...this.pending.values()].map((m) => this.item(m)));
    this.more.hidden = !this.hasMore || this.loading;
    let state = '';
    if (this.loading) state = t('loading');
    else if (this.error) state = t('replies.failed');
    else if (!replies.length && !this.pending.size) state = t('replies.empty');
    this.stateEl.textContent = state;
  }

  close(restoreFocus = true) {
    this.offEvent();
    this.picker.close();
    this.el.remove();
    this.w.closedReplies(this);
    if (!restoreFocus) return;
    // What opened it, or (redrawn since) the message's replies button or actions.
    if (this.opener && this.opener.isConnected) this.opener.focus();
    else this.w.focusIn(this.parent.id, '[data-focus-key="replies"], [data-focus-key="more"]');
  }
}
