// Search in the widget: a search box above the conversation list (every conversation the
// user is in) and at the top of a conversation (that one), with results that jump to the
// message in its conversation.
//
// Invariants:
// - The server's snippet_html is never parsed as HTML: it is split at its <mark> tags and
//   each piece is unescaped (the server escaped exactly &, <, >, " and ') into a text node;
//   the marks become <mark> elements built here.
// - A query is sent once the user pauses typing (DEBOUNCE_MS), and only the newest answer
//   is shown: an older one arriving late is dropped.
// - Every string a person reads comes from the catalogue.

import { clear, h } from './dom.js';

const DEBOUNCE_MS = 250;
const MIN_LENGTH = 2;
const MAX_LENGTH = 200;
const ENTITIES = { '&amp;': '&', '&lt;': '<', '&gt;': '>', '&quot;': '"', '&#x27;': "'" };

// The pieces of snippet_html: text nodes and <mark> elements, never parsed markup.
export function markedSnippet(snippetHtml) {
  const unescape = (text) => text.replace(/&(?:amp|lt|gt|quot|#x27);/g, (e) => ENTITIES[e]);
  const out = [];
  let marked = false;
  for (const piece of String(snippetHtml).split(/(<mark>|<\/mark>)/)) {
    if (piece === '<mark>') marked = true;
    else if (piece === '</mark>') marked = false;
    else if (piece) out.push(marked ? h('mark', { text: unescape(piece) }) : unescape(piece));
  }
  return out;
}

// A search box and its results. `conversationId`: search only that conversation.
// `titleOf(id)`: the title to show for a conversation; `pick(hit)`: jump to a hit.
export class SearchBox {
  constructor({ api, t, i18n, conversationId = null, titleOf, pick }) {
    this.api = api;
    this.t = t;
    this.i18n = i18n;
    this.conversationId = conversationId;
    this.titleOf = titleOf;
    this.pick = pick;
    this.timer = null;
    this.asked = 0;
    this.input = h('input', {
      class: 'cw-search-input',
      type: 'search',
      maxlength: String(MAX_LENGTH),
      'data-testid': conversationId ? 'search-conversation' : 'search',
      'aria-label': t(conversationId ? 'search.inConversation' : 'search.label'),
      placeholder: t(conversationId ? 'search.inConversation' : 'search.label'),
      oninput: () => this.schedule(),
      onkeydown: (event) => {
        if (event.key === 'Escape' && this.input.value) {
          event.stopPropagation();
          this.reset();
        }
      },
    });
    this.results = h('ul', {
      class: 'cw-search-results',
      'data-testid': 'search-results',
      'aria-live': 'polite',
      hidden: true,
    });
    this.el = h(
      'div',
      { class: 'cw-search', role: 'search' },
      this.input,
      this.results,
    );
  }

  // Whether results are showing (the list or thread under the box is then hidden).
  get active() {
    return !this.results.hidden;
  }

  reset() {
    clearTimeout(this.timer);
    this.asked += 1;
    this.input.value = '';
    this.show(false);
  }

  show(on) {
    this.results.hidden = !on;
    this.el.dispatchEvent(new CustomEvent('searchtoggle', { detail: on }));
  }

  schedule() {
    clearTimeout(this.timer);
    const q = this.input.value.trim();
    if (q.length < MIN_LENGTH) {
      this.asked += 1;
      this.show(false);
      return;
    }
    this.timer = setTimeout(() => this.run(q), DEBOUNCE_MS);
  }

  async run(q) {
    const asked = ++this.asked;
    this.status(this.t('loading'));
    let page;
    try {
      page = await this.api.request('GET', '/search', {
        query: { q, conversation_id: this.conversationId, limit: 20 },
      });
    } catch {
      if (asked === this.asked) this.status(this.t('search.failed'));
      return;
    }
    if (asked !== this.asked) return; // a newer query is on its way
    this.render(page.data);
  }

  status(text) {
    clear(this.results);
    this.results.append(h('li', { class: 'cw-empty', role: 'status', text }));
    this.show(true);
  }

  render(hits) {
    if (!hits.length) {
      this.status(this.t('search.none'));
      return;
    }
    clear(this.results);
    for (const hit of hits) {
      const message = hit.message;
      const button = h(
        'button',
        {
          class: 'cw-search-hit',
          type: 'button',
          'data-testid': 'search-hit',
          dataset: { id: message.id, conversation: message.conversation_id },
          onclick: () => {
            this.reset();
            this.pick(hit);
          },
        },
        this.conversationId
          ? null
          : h('span', { class: 'cw-search-title', text: this.titleOf(message.conversation_id) }),
        h('span', { class: 'cw-search-snippet' }, markedSnippet(hit.snippet_html)),
        h('time', {
          class: 'cw-time',
          datetime: message.created_at,
          text: this.i18n.ago(message.created_at, new Date()),
        }),
      );
      this.results.append(h('li', {}, button));
    }
    this.show(true);
  }
}
