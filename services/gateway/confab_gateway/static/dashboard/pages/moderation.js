// The moderation queue: reported messages, newest first, each with the messages around
// it; hide, restore or delete the message, ban or erase its sender (as the role allows).

import { announce, avatar, confirmDialog, empty, failed, h, loading, replace, when } from '../dom.js';

const CONTEXT = 2; // messages shown before and after the reported one

export async function render(main, { api, can }) {
  let status = 'open';
  const list = h('div', { class: 'queue', 'aria-live': 'polite' });
  const filter = h(
    'div',
    { class: 'segmented', role: 'group', 'aria-label': 'Which reports' },
    ...[
      ['open', 'Open'],
      ['all', 'All'],
    ].map(([value, label]) =>
      h(
        'button',
        {
          type: 'button',
          class: 'segment',
          'aria-pressed': String(value === status),
          dataset: { value },
          onclick: (event) => {
            status = value;
            for (const b of filter.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.value === value));
            event.currentTarget.focus();
            load();
          },
        },
        label,
      ),
    ),
  );
  replace(
    main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Moderation'), filter),
    h('p', { class: 'muted' }, 'Messages your users reported. Hiding keeps the message for you and removes it for everyone else; deleting removes it for good.'),
    list,
  );

  async function load() {
    replace(list, loading('reports'));
    list.setAttribute('aria-busy', 'true');
    try {
      const page = await api.get('/api/v1/reports', { status, limit: 50 });
      if (!page.data.length) {
        replace(list, empty(status === 'open' ? 'No open reports' : 'No reports yet', 'Reports your users make from the widget appear here.'));
      } else {
        replace(list, h('ol', { class: 'cards' }, page.data.map((report) => card(report))));
      }
    } catch (error) {
      replace(list, failed(error, load));
    } finally {
      list.removeAttribute('aria-busy');
    }
  }

  function card(report) {
    const message = report.message;
    const context = h('ol', { class: 'context', 'aria-label': 'The conversation around it' }, h('li', { class: 'muted' }, 'Loading the conversation…'));
    const actions = h('div', { class: 'actions' });
    const state = h('span', { class: `badge ${report.status}` }, report.status);
    const item = h(
      'li',
      { class: 'card report', 'data-testid': 'report', dataset: { message: message.id } },
      h(
        'div',
        { class: 'card-head' },
        h('p', {}, h('strong', {}, 'Reported'), ' ', when(report.created_at), report.reason ? ` — “${report.reason}”` : ''),
        state,
      ),
      context,
      actions,
    );
    const act = async (label, run, done) => {
      for (const b of actions.querySelectorAll('button')) b.disabled = true;
      try {
        await run();
        announce(done);
        await load();
      } catch (error) {
        announce(error.message);
        replace(actions, h('p', { class: 'form-error', role: 'alert' }, error.message));
      }
    };
    const sender = message.sender;
    const buttons = [];
    if (report.status !== 'hidden' && report.status !== 'deleted') {
      buttons.push(h('button', { type: 'button', class: 'button', onclick: () => act('hide', () => api.post(`/api/v1/messages/${message.id}/moderation`, { action: 'hide' }), 'Message hidden.') }, 'Hide'));
    }
    if (report.status === 'hidden') {
      buttons.push(h('button', { type: 'button', class: 'button', onclick: () => act('restore', () => api.post(`/api/v1/messages/${message.id}/moderation`, { action: 'restore' }), 'Message restored.') }, 'Restore'));
    }
    if (report.status !== 'deleted') {
      buttons.push(
        h('button', {
          type: 'button',
          class: 'button danger-quiet',
          onclick: async () => {
            const ok = await confirmDialog({ title: 'Delete this message?', body: 'It is removed for everyone, for good.', confirm: 'Delete', danger: true });
            if (ok) act('delete', () => api.post(`/api/v1/messages/${message.id}/moderation`, { action: 'delete' }), 'Message deleted.');
          },
        }, 'Delete'),
      );
    }
    if (sender && can('users.ban')) {
      buttons.push(h('button', { type: 'button', class: 'button', onclick: () => act('ban', () => api.post(`/api/v1/users/${sender.id}/ban`), `${sender.name} is banned.`) }, `Ban ${sender.name}`));
    }
    if (sender && can('users.erase')) {
      buttons.push(
        h('button', {
          type: 'button',
          class: 'button danger-quiet',
          onclick: async () => {
            const ok = await confirmDialog({
              title: `Erase ${sender.name}?`,
              body: 'Their profile and every message they wrote are erased for good (GDPR). This cannot be undone.',
              confirm: 'Erase',
              danger: true,
            });
            if (ok) act('erase', () => api.delete(`/api/v1/users/${sender.id}`), `${sender.name} was erased.`);
          },
        }, `Erase ${sender.name}`),
      );
    }
    replace(actions, buttons);
    loadContext(report, context);
    return item;
  }

  async function loadContext(report, context) {
    const message = report.message;
    try {
      const page = await api.get(`/api/v1/conversations/${report.conversation_id}/messages`, {
        before: message.seq + CONTEXT + 1,
        limit: CONTEXT * 2 + 1,
      });
      const around = page.data.filter((m) => Math.abs(m.seq - message.seq) <= CONTEXT);
      if (!around.some((m) => m.id === message.id)) around.push(message);
      around.sort((a, b) => a.seq - b.seq);
      replace(context, around.map((m) => line(m, m.id === message.id)));
    } catch {
      replace(context, line(message, true));
    }
  }

  await load();
}

function line(message, reported) {
  const name = message.sender ? message.sender.name : 'System';
  const text = message.deleted ? 'This message was deleted.' : message.content || (message.attachments.length ? `${message.attachments.length} attachment(s)` : '');
  return h(
    'li',
    { class: reported ? 'line reported' : 'line', 'data-testid': reported ? 'reported-message' : null },
    avatar(name),
    h(
      'div',
      {},
      h('p', { class: 'meta' }, h('strong', {}, name), ' ', when(message.created_at), message.hidden ? h('span', { class: 'badge hidden' }, 'hidden') : null, reported ? h('span', { class: 'badge open' }, 'reported') : null),
      h('p', { class: message.deleted ? 'text muted' : 'text' }, text),
    ),
  );
}
