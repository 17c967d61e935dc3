// "Send us a message": a conversation with the workspace's team, from the widget (issue 19).
//
// When the workspace enables support (GET /api/widget/support?app_key=…), the list view
// shows a card with the team (name, avatars), the greeting, and when they reply ("typically
// replies in a few minutes" while an agent is online, else that they are away), and a
// button that opens a form: the pre-chat fields the workspace asks of visitors it has not
// identified (name, email), and the first message. Sending starts a support conversation
// (POST /api/widget/support/conversations) and opens it as any other.
//
// Anonymous visitors: `visitorSession(apiUrl, appKey)` gets a visitor session from the
// public widget key (the gateway checks the page's origin), kept in localStorage per key
// so that a returning visitor finds their conversations again.
//
// Everything a person reads comes from the catalogue; server text is set as text nodes.

import { avatarColor, h, icon, initials, safeUrl } from './dom.js';
import { randomId } from './client.js';

const STORE = 'confab-visitor:';
const VISITOR_PREFIX = 'visitor:';
const RENEW_BEFORE_MS = 24 * 3600_000;

/** A visitor session for `appKey`: the one this browser has, or a new one. */
export async function visitorSession(apiUrl, appKey) {
  const key = STORE + appKey;
  try {
    const kept = JSON.parse(localStorage.getItem(key) || 'null');
    if (kept && kept.token && Date.parse(kept.expires_at) - Date.now() > RENEW_BEFORE_MS) {
      return kept;
    }
  } catch {
    // No storage here (a private window, a sandboxed frame): a session for this page only.
  }
  const response = await fetch(String(apiUrl).replace(/\/+$/, '') + '/api/widget/visitors', {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ app_key: appKey }),
    mode: 'cors',
    credentials: 'omit',
    cache: 'no-store',
  });
  const body = await response.json().catch(() => null);
  if (!response.ok || !body || !body.token) {
    const message = (body && body.error && body.error.message) || `${response.status}`;
    throw new Error(`Confab widget: no visitor session (${message})`);
  }
  const session = { token: body.token, expires_at: body.expires_at };
  try {
    localStorage.setItem(key, JSON.stringify(session));
  } catch {
    // As above: not kept.
  }
  return session;
}

/** The support part of `widget`, or null when the workspace does not take messages. */
export async function createSupport(widget) {
  const client = widget.client;
  const appKey = client.me && client.me.app_key;
  if (!appKey) return null;
  const settings = await client.api.request('GET', '/support', { query: { app_key: appKey } });
  return settings && settings.enabled ? new Support(widget, settings) : null;
}

class Support {
  constructor(widget, settings) {
    this.widget = widget;
    this.settings = settings;
    this.draft = { content: '', name: '', email: '' };
    this.sending = false;
    this.error = null;
    this.invalid = {};
  }

  get t() {
    return this.widget.t;
  }

  /** Pre-chat fields to ask: only of a visitor the tenant has not identified. */
  fields() {
    const user = this.widget.client.user;
    const visitor = Boolean(user && String(user.external_id || '').startsWith(VISITOR_PREFIX));
    if (!visitor) return [];
    return [
      ['name', this.settings.prechat_name, 'text', 'name'],
      ['email', this.settings.prechat_email, 'email', 'email'],
    ].filter(([, wanted]) => wanted !== 'off');
  }

  replyLine() {
    const s = this.settings;
    return s.team_online ? this.t(`support.replies.${s.reply_time}`) : this.t('support.away');
  }

  team() {
    const s = this.settings;
    const faces = h('span', { class: 'cw-team-faces', 'aria-hidden': 'true' });
    const avatars = s.team_avatars.map((url) => safeUrl(url)).filter(Boolean);
    for (const url of avatars.slice(0, 3)) {
      faces.append(h('span', { class: 'cw-avatar' }, h('img', { src: url, alt: '', width: 32, height: 32 })));
    }
    if (!avatars.length) {
      const face = h('span', { class: 'cw-avatar', text: initials(s.team_name || '?', this.widget.i18n.locale) });
      face.style.setProperty('--cw-avatar', avatarColor(s.team_name || 'team'));
      faces.append(face);
    }
    return faces;
  }

  /** The card above the conversation list. */
  entry() {
    const t = this.t;
    const s = this.settings;
    return h(
      'section',
      { class: 'cw-support', 'aria-labelledby': 'cw-support-team', 'data-testid': 'support-card' },
      h(
        'div',
        { class: 'cw-support-head' },
        this.team(),
        h(
          'div',
          {},
          h('h3', { class: 'cw-support-team', id: 'cw-support-team', text: s.team_name || t('support.team') }),
          h('p', { class: 'cw-support-reply', 'data-testid': 'reply-time', text: this.replyLine() }),
        ),
      ),
      s.greeting ? h('p', { class: 'cw-support-greeting', text: s.greeting }) : null,
      h(
        'button',
        {
          class: 'cw-button cw-support-start',
          type: 'button',
          'data-testid': 'support-start',
          onclick: () => this.open(),
        },
        icon('send', 16),
        h('span', { text: t('support.start') }),
      ),
    );
  }

  open() {
    const widget = this.widget;
    widget.view = 'support';
    widget.current = null;
    widget.render();
    const first = widget.body.querySelector('[data-focus-first]');
    if (first) first.focus();
  }

  /** The form, in the panel's body (the widget's render() calls it for view 'support'). */
  render(body) {
    const widget = this.widget;
    const t = this.t;
    const s = this.settings;
    widget.title.textContent = s.team_name || t('support.team');
    widget.backButton.hidden = false;
    const inputs = [];
    const form = h('form', {
      class: 'cw-support-form',
      'data-testid': 'support-form',
      novalidate: true,
      onsubmit: (event) => {
        event.preventDefault();
        this.send();
      },
    });
    form.append(
      h(
        'div',
        { class: 'cw-support-intro' },
        this.team(),
        s.greeting ? h('p', { class: 'cw-support-greeting', text: s.greeting }) : null,
        h('p', { class: 'cw-support-reply', text: this.replyLine() }),
      ),
    );
    for (const [name, wanted, type, autocomplete] of this.fields()) {
      const id = `cw-support-${name}`;
      const label = t(`support.${name}`) + (wanted === 'optional' ? ` ${t('support.optional')}` : '');
      const input = h('input', {
        class: 'cw-support-input',
        id,
        name,
        type,
        autocomplete,
        required: wanted === 'required',
        'aria-invalid': this.invalid[name] ? 'true' : null,
        'aria-describedby': this.invalid[name] ? `${id}-error` : null,
        maxlength: name === 'email' ? 254 : 200,
        value: this.draft[name],
        'data-focus-first': inputs.length ? null : '',
        oninput: (event) => {
          this.draft[name] = event.target.value;
        },
      });
      inputs.push(input);
      form.append(
        h(
          'div',
          { class: 'cw-support-field' },
          h('label', { for: id, text: label }),
          input,
          this.invalid[name]
            ? h('p', { class: 'cw-support-error', id: `${id}-error`, text: t('support.fieldRequired') })
            : null,
        ),
      );
    }
    const message = h('textarea', {
      class: 'cw-input cw-support-message',
      id: 'cw-support-message',
      name: 'content',
      rows: 4,
      maxlength: 10000,
      required: true,
      'data-testid': 'support-message',
      'aria-invalid': this.invalid.content ? 'true' : null,
      'data-focus-first': inputs.length ? null : '',
      oninput: (event) => {
        this.draft.content = event.target.value;
      },
      onkeydown: (event) => {
        if (event.key === 'Enter' && (event.ctrlKey || event.metaKey)) {
          event.preventDefault();
          this.send();
        }
      },
    });
    message.value = this.draft.content;
    form.append(
      h(
        'div',
        { class: 'cw-support-field' },
        h('label', { for: 'cw-support-message', text: t('support.message') }),
        message,
      ),
      this.error ? h('p', { class: 'cw-support-error', role: 'alert', text: this.error }) : null,
      h(
        'button',
        {
          class: 'cw-button cw-support-send',
          type: 'submit',
          'data-testid': 'support-send',
          disabled: this.sending,
        },
        h('span', { text: this.sending ? t('message.sending') : t('support.send') }),
      ),
    );
    body.append(form);
  }

  async send() {
    if (this.sending) return;
    const widget = this.widget;
    const fields = this.fields();
    const content = this.draft.content.trim();
    this.invalid = {};
    for (const [name, wanted] of fields) {
      if (wanted === 'required' && !this.draft[name].trim()) this.invalid[name] = true;
    }
    if (!content) this.invalid.content = true;
    this.error = Object.keys(this.invalid).length ? this.t('support.required') : null;
    if (this.error) {
      widget.render();
      const bad = widget.body.querySelector('[aria-invalid="true"]');
      if (bad) bad.focus();
      return;
    }
    const body = { content, client_msg_id: randomId() };
    for (const [name] of fields) {
      const value = this.draft[name].trim();
      if (value) body[name] = value;
    }
    this.sending = true;
    widget.render();
    try {
      const conversation = await widget.client.api.request('POST', '/support/conversations', {
        json: body,
      });
      this.draft = { content: '', name: '', email: '' };
      this.sending = false;
      await widget.client.refreshList().catch(() => {});
      await widget.openConversation(conversation.id);
    } catch (error) {
      this.sending = false;
      this.error = widget.errorText(error, 'support.failed');
      if (widget.view === 'support') {
        widget.render();
        const alert = widget.body.querySelector('[role="alert"]');
        if (alert) alert.scrollIntoView({ block: 'nearest' });
      }
    }
  }
}
