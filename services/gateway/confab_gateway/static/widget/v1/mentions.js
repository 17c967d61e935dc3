// Mentions: typing "@" in a composer suggests the conversation's participants, and a
// message's mentions are drawn from its structured entities, never parsed from the text.
//
// - The server stores each mention as {user_id, start, end} in Unicode code points
//   (api: "mentions"); mentionParts() cuts a text by them (code points, not UTF-16 units)
//   and every part becomes a text node (dom.js), so a name is never markup.
// - The suggestions follow the ARIA pattern for an autocompleting text box: the
//   textarea keeps its textbox role (a textarea cannot be a combobox) and carries
//   aria-autocomplete="list", aria-controls (the listbox) and aria-activedescendant (the
//   option under the arrow keys); ↑/↓ move, Enter or Tab choose, Escape closes; the
//   number of suggestions is announced in a polite live region. Pointer users click.
// - Only mentions the user chose from the list are sent: take(text) finds each chosen
//   "@Name" in the final text, in order, and gives its code-point offsets; one the user
//   edited away is simply not sent (the server checks the rest).

import { h } from './dom.js';

const MAX_SUGGESTIONS = 8;
let counter = 0;

/** The parts of `content` cut by `mentions`: [{text}] and [{text, userId}] in order. */
export function mentionParts(content, mentions) {
  const text = String(content || '');
  const list = (Array.isArray(mentions) ? mentions : [])
    .filter((m) => m && Number.isInteger(m.start) && Number.isInteger(m.end) && m.start < m.end)
    .sort((a, b) => a.start - b.start);
  if (!list.length) return [{ text }];
  const points = Array.from(text);
  const parts = [];
  let at = 0;
  for (const m of list) {
    if (m.start < at || m.end > points.length) continue; // overlapping or outside: as text
    if (m.start > at) parts.push({ text: points.slice(at, m.start).join('') });
    parts.push({ text: points.slice(m.start, m.end).join(''), userId: String(m.user_id) });
    at = m.end;
  }
  if (at < points.length) parts.push({ text: points.slice(at).join('') });
  return parts;
}

/** The code-point offset of UTF-16 index `index` in `text`. */
function pointsBefore(text, index) {
  return Array.from(text.slice(0, index)).length;
}

export class MentionPicker {
  /**
   * @param {HTMLTextAreaElement} input  the composer
   * @param {{people: () => Array<{id: string, name: string}>, t: Function, anchor: Element}} options
   */
  constructor(input, { people, t, anchor }) {
    this.input = input;
    this.people = people;
    this.t = t;
    this.chosen = []; // [{userId, text}] in the order chosen
    this.options = [];
    this.active = -1;
    this.query = null; // {start, text}: the "@…" being typed (UTF-16 indices)
    const id = `cw-mentions-${++counter}`;
    this.list = h('ul', {
      class: 'cw-mention-list',
      role: 'listbox',
      id,
      hidden: true,
      'aria-label': t('mention.label'),
      'data-testid': 'mention-list',
    });
    this.status = h('p', { class: 'cw-sr', role: 'status', 'aria-live': 'polite' });
    input.setAttribute('aria-autocomplete', 'list');
    input.setAttribute('aria-controls', id);
    anchor.append(this.list, this.status);
    input.addEventListener('input', () => this.update());
    input.addEventListener('click', () => this.update());
    input.addEventListener('blur', () => setTimeout(() => this.close(), 150));
  }

  get open() {
    return !this.list.hidden;
  }

  /** Handles a key of the composer; true if it was the picker's. */
  onKey(event) {
    if (!this.open) return false;
    const count = this.options.length;
    if (event.key === 'ArrowDown' || event.key === 'ArrowUp') {
      this.setActive((this.active + (event.key === 'ArrowDown' ? 1 : -1) + count) % count);
    } else if ((event.key === 'Enter' || event.key === 'Tab') && !event.shiftKey && this.active >= 0) {
      this.choose(this.options[this.active].person);
    } else if (event.key === 'Escape') {
      this.close();
      event.stopPropagation();
    } else return false;
    event.preventDefault();
    return true;
  }

  update() {
    const { value, selectionStart: caret } = this.input;
    const before = value.slice(0, caret);
    const found = /(^|\s)@([^\s@]{0,40})$/u.exec(before);
    if (!found) return this.close();
    const query = found[2];
    this.query = { start: caret - query.length - 1, text: query };
    const wanted = query.toLocaleLowerCase();
    const matches = this.people()
      .filter((p) => p.name && p.name.toLocaleLowerCase().split(/\s+/u).some((w) => w.startsWith(wanted)))
      .slice(0, MAX_SUGGESTIONS);
    if (!matches.length) return this.close();
    this.render(matches);
  }

  render(people) {
    this.list.replaceChildren();
    this.options = people.map((person, n) => {
      const el = h('li', {
        class: 'cw-mention-option',
        role: 'option',
        id: `${this.list.id}-${n}`,
        'aria-selected': 'false',
        'data-testid': 'mention-option',
        text: person.name,
        onmousedown: (event) => {
          event.preventDefault(); // keep the focus in the composer
          this.choose(person);
        },
      });
      this.list.append(el);
      return { el, person };
    });
    this.list.hidden = false;
    this.setActive(0);
    this.status.textContent = this.t('mention.count', { count: people.length });
  }

  setActive(n) {
    this.active = n;
    this.options.forEach((o, i) => o.el.setAttribute('aria-selected', String(i === n)));
    const current = this.options[n];
    if (current) {
      this.input.setAttribute('aria-activedescendant', current.el.id);
      current.el.scrollIntoView({ block: 'nearest' });
    }
  }

  choose(person) {
    if (!this.query) return;
    const { value } = this.input;
    const text = `@${person.name}`;
    const end = this.query.start + 1 + this.query.text.length;
    this.input.value = `${value.slice(0, this.query.start)}${text} ${value.slice(end)}`;
    const caret = this.query.start + text.length + 1;
    this.input.setSelectionRange(caret, caret);
    this.chosen.push({ userId: person.id, text });
    this.close();
    this.input.dispatchEvent(new Event('input', { bubbles: true }));
  }

  close() {
    if (!this.open && !this.query) return;
    this.list.hidden = true;
    this.list.replaceChildren();
    this.options = [];
    this.active = -1;
    this.query = null;
    this.input.removeAttribute('aria-activedescendant');
    this.status.textContent = '';
  }

  /** The mentions of `text` (what will be sent) as {user_id, start, end}; forgets them. */
  take(text) {
    const out = [];
    const used = new Set();
    for (const { userId, text: name } of this.chosen) {
      let index = text.indexOf(name);
      while (index >= 0 && used.has(index)) index = text.indexOf(name, index + 1);
      if (index < 0) continue;
      used.add(index);
      const start = pointsBefore(text, index);
      out.push({ user_id: userId, start, end: start + Array.from(name).length });
    }
    this.chosen = [];
    this.close();
    return out.sort((a, b) => a.start - b.start);
  }
}
