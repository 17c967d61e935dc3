// Users: search by name, email or external id; a user's profile and conversations; ban
// or unban, erase, and the GDPR export (as the role allows).

import { announce, avatar, confirmDialog, empty, failed, h, loading, replace, when } from '../dom.js';

export async function render(main, context) {
  if (context.rest) return detail(main, context, context.rest);
  return search(main, context);
}

async function search(main, { api }) {
  const params = new URLSearchParams(location.hash.split('?')[1] || '');
  const input = h('input', { id: 'user-search', type: 'search', name: 'q', value: params.get('q') || '', placeholder: 'Name, email or external ID', autocomplete: 'off' });
  const results = h('div', { 'aria-live': 'polite' });
  let timer = null;
  let cursor = null;
  let rows = [];
  const form = h(
    'form',
    {
      role: 'search',
      class: 'search',
      onsubmit: (event) => {
        event.preventDefault();
        run();
      },
    },
    h('label', { for: 'user-search', class: 'visually-hidden' }, 'Search users'),
    input,
    h('button', { type: 'submit', class: 'button' }, 'Search'),
  );
  input.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(run, 250);
  });
  replace(main, h('div', { class: 'page-head' }, h('h1', {}, 'Users')), form, results);

  async function run(more = false) {
    if (!more) {
      cursor = null;
      rows = [];
      replace(results, loading('users'));
    }
    results.setAttribute('aria-busy', 'true');
    try {
      const q = input.value.trim();
      const page = await api.get('/api/v1/users', { q, cursor, limit: 25 });
      rows = rows.concat(page.data);
      cursor = page.next_cursor;
      if (!rows.length) {
        replace(results, empty(q ? `No users match “${q}”` : 'No users yet', q ? 'Try part of a name, an email or an external ID.' : 'Users appear once your backend creates them or visitors write in.'));
        return;
      }
      replace(
        results,
        h(
          'table',
          { class: 'table' },
          h('caption', { class: 'visually-hidden' }, 'Users'),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Name'), h('th', { scope: 'col' }, 'Email'), h('th', { scope: 'col' }, 'External ID'), h('th', { scope: 'col' }, 'Updated'))),
          h(
            'tbody',
            {},
            rows.map((u) =>
              h(
                'tr',
                {},
                h('td', {}, h('a', { href: `#/users/${u.id}`, class: 'person' }, avatar(u.name), u.name), u.banned ? h('span', { class: 'badge hidden' }, 'banned') : null),
                h('td', {}, u.email || '—'),
                h('td', { class: 'mono' }, u.external_id),
                h('td', {}, when(u.updated_at)),
              ),
            ),
          ),
        ),
        cursor ? h('button', { type: 'button', class: 'button', onclick: () => run(true) }, 'Show more') : null,
      );
    } catch (error) {
      replace(results, failed(error, () => run()));
    } finally {
      results.removeAttribute('aria-busy');
    }
  }
  await run();
}

async function detail(main, { api, can, navigate }, userId) {
  replace(main, loading('the user'));
  let user;
  try {
    user = await api.get(`/api/v1/users/${encodeURIComponent(userId)}`);
  } catch (error) {
    replace(main, h('p', {}, h('a', { href: '#/users' }, '← Users')), failed(error, () => detail(main, { api, can, navigate }, userId)));
    return;
  }
  const status = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const actions = [];
  const act = async (run, done) => {
    status.hidden = true;
    try {
      await run();
      announce(done);
      await detail(main, { api, can, navigate }, userId);
    } catch (error) {
      status.hidden = false;
      status.textContent = error.message;
    }
  };
  if (can('users.ban')) {
    actions.push(
      user.banned
        ? h('button', { type: 'button', class: 'button', onclick: () => act(() => api.delete(`/api/v1/users/${user.id}/ban`), `${user.name} is no longer banned.`) }, 'Unban')
        : h('button', { type: 'button', class: 'button', onclick: () => act(() => api.post(`/api/v1/users/${user.id}/ban`), `${user.name} is banned.`) }, 'Ban'),
    );
  }
  if (can('users.erase')) {
    actions.push(h('button', { type: 'button', class: 'button', onclick: () => exportUser(api, user, status) }, 'Export data (GDPR)'));
    actions.push(
      h('button', {
        type: 'button',
        class: 'button danger-quiet',
        onclick: async () => {
          const ok = await confirmDialog({ title: `Erase ${user.name}?`, body: 'Their profile and every message they wrote are erased for good. This cannot be undone.', confirm: 'Erase', danger: true });
          if (!ok) return;
          try {
            await api.delete(`/api/v1/users/${user.id}`);
            announce(`${user.name} was erased.`);
            navigate('users');
          } catch (error) {
            status.hidden = false;
            status.textContent = error.message;
          }
        },
      }, 'Erase'),
    );
  }
  const metadata = Object.entries(user.metadata || {});
  const conversations = h('div', {}, loading('conversations'));
  replace(
    main,
    h('p', {}, h('a', { href: '#/users' }, '← Users')),
    h('div', { class: 'page-head' }, h('h1', { class: 'person' }, avatar(user.name), user.name), user.banned ? h('span', { class: 'badge hidden' }, 'banned') : null),
    h('div', { class: 'actions' }, actions),
    status,
    h(
      'dl',
      { class: 'facts' },
      h('dt', {}, 'Email'), h('dd', {}, user.email || '—'),
      h('dt', {}, 'External ID'), h('dd', { class: 'mono' }, user.external_id),
      h('dt', {}, 'User ID'), h('dd', { class: 'mono' }, user.id),
      h('dt', {}, 'Created'), h('dd', {}, when(user.created_at)),
      metadata.map(([k, v]) => [h('dt', {}, k), h('dd', {}, typeof v === 'string' ? v : JSON.stringify(v))]),
    ),
    h('h2', {}, 'Conversations'),
    conversations,
  );
  try {
    const page = await api.get(`/api/v1/users/${user.id}/conversations`, { limit: 50 });
    if (!page.data.length) replace(conversations, empty('No conversations', `${user.name} has not taken part in any conversation.`));
    else
      replace(
        conversations,
        h(
          'ul',
          { class: 'rows' },
          page.data.map((c) =>
            h(
              'li',
              {},
              h('a', { href: `#/conversations/${c.id}` }, h('strong', {}, c.title || c.participants.map((p) => p.name).join(', ') || c.id)),
              ' ',
              h('span', { class: 'badge' }, c.type),
              h('p', { class: 'muted' }, c.last_message ? `${c.last_message.sender ? c.last_message.sender.name + ': ' : ''}${c.last_message.content}` : 'No messages yet'),
            ),
          ),
        ),
      );
  } catch (error) {
    replace(conversations, failed(error));
  }
}

async function exportUser(api, user, status) {
  try {
    const response = await api.call('GET', `/api/v1/users/${user.id}/export`, undefined, { raw: true });
    const blob = await response.blob();
    const link = h('a', { href: URL.createObjectURL(blob), download: `confab-user-${user.id}.json` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
    announce('The export was downloaded.');
  } catch (error) {
    status.hidden = false;
    status.textContent = error.message;
  }
}
