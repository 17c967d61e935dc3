// A secret shown once (a new API key, a webhook's signing secret, an invitation link):
// selectable, copyable, and said plainly that it will not be shown again.

import { announce, h } from '../dom.js';

export function shownOnce(title, value, note) {
  const input = h('input', { id: 'secret-value', class: 'mono', readonly: true, value, 'aria-describedby': 'secret-note' });
  return h(
    'div',
    { class: 'once', role: 'status', 'data-testid': 'shown-once' },
    h('p', { class: 'state-title' }, title),
    h('label', { for: 'secret-value', class: 'visually-hidden' }, title),
    h(
      'div',
      { class: 'copy-row' },
      input,
      h(
        'button',
        {
          type: 'button',
          class: 'button',
          onclick: async () => {
            input.select();
            try {
              await navigator.clipboard.writeText(value);
              announce('Copied.');
            } catch {
              announce('Select the text and copy it.');
            }
          },
        },
        'Copy',
      ),
    ),
    h('p', { id: 'secret-note', class: 'muted' }, note),
  );
}
