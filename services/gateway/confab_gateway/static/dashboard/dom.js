// Building the page from nodes, never from markup: every text from the API goes in as text.

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'text') el.textContent = value;
    else if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });

export function when(iso) {
  if (!iso) return '';
  const date = new Date(iso);
  const today = new Date();
  const text = date.toDateString() === today.toDateString() ? timeOnly.format(date) : dateTime.format(date);
  return h('time', { datetime: date.toISOString(), title: dateTime.format(date) }, text);
}

export function announce(text) {
  const region = document.getElementById('announcer');
  if (!region) return;
  region.textContent = '';
  setTimeout(() => {
    region.textContent = text;
  }, 30);
}

// The three states every list has: loading, empty and failed (with a way to try again).
export function loading(what) {
  return h('div', { class: 'state loading', role: 'status' }, h('span', { class: 'spinner', 'aria-hidden': 'true' }), `Loading ${what}…`);
}

export function empty(title, hint) {
  return h('div', { class: 'state empty' }, h('p', { class: 'state-title' }, title), hint ? h('p', { class: 'muted' }, hint) : null);
}

export function failed(error, retry) {
  return h(
    'div',
    { class: 'state error', role: 'alert' },
    h('p', { class: 'state-title' }, 'Something went wrong'),
    h('p', {}, error.message || String(error)),
    retry ? h('button', { type: 'button', class: 'button', onclick: retry }, 'Try again') : null,
  );
}

export function initials(name) {
  const parts = String(name || '?').trim().split(/\s+/).slice(0, 2);
  return parts.map((p) => Array.from(p)[0] || '').join('').toUpperCase() || '?';
}

export function avatar(name) {
  return h('span', { class: 'avatar', 'aria-hidden': 'true' }, initials(name));
}

// A confirmation as a real dialog: focus moves in, Escape cancels, focus comes back.
export function confirmDialog({ title, body, confirm, danger = false }) {
  return new Promise((resolve) => {
    const opener = document.activeElement;
    const dialog = h(
      'dialog',
      { class: 'dialog', 'aria-labelledby': 'dialog-title' },
      h('h2', { id: 'dialog-title' }, title),
      h('p', {}, body),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', class: 'button', value: 'cancel', onclick: () => dialog.close('cancel') }, 'Cancel'),
        h(
          'button',
          { type: 'button', class: danger ? 'button danger' : 'button primary', onclick: () => dialog.close('ok') },
          confirm,
        ),
      ),
    );
    dialog.addEventListener('close', () => {
      dialog.remove();
      if (opener && opener.focus) opener.focus();
      resolve(dialog.returnValue === 'ok');
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
