// API keys (keys.manage): list by prefix, create (the secret shown once), rotate (a new
// key, then the old one revoked) and revoke.

import { announce, confirmDialog, empty, failed, h, loading, replace, when } from '../dom.js';
import { shownOnce } from './secret.js';

export async function render(main, { api }) {
  const notice = h('div', {});
  const list = h('div', { 'aria-live': 'polite' });
  const create = h('button', { type: 'button', class: 'button primary', onclick: () => make() }, 'Create API key');
  replace(
    main,
    h('div', { class: 'page-head' }, h('h1', {}, 'API keys'), create),
    h('p', { class: 'muted' }, 'Your backend calls the tenant API with a key in the X-API-Key header. Keys are shown once, when made.'),
    notice,
    list,
  );

  async function make(replacing) {
    try {
      const key = await api.post('/api/v1/api-keys');
      if (replacing) await api.delete(`/api/v1/api-keys/${replacing.id}`);
      replace(notice, shownOnce(replacing ? 'Your new key (the old one is revoked)' : 'Your new API key', key.api_key, 'Copy it now: it is not shown again.'));
      notice.querySelector('input').focus();
      await load();
    } catch (error) {
      replace(notice, failed(error));
    }
  }

  async function load() {
    replace(list, loading('API keys'));
    try {
      const page = await api.get('/api/v1/api-keys');
      if (!page.data.length) {
        replace(list, empty('No API keys', 'Create one for your backend.'));
        return;
      }
      replace(
        list,
        h(
          'table',
          { class: 'table' },
          h('caption', { class: 'visually-hidden' }, 'API keys'),
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Key'), h('th', { scope: 'col' }, 'Created'), h('th', { scope: 'col' }, 'Status'), h('th', { scope: 'col' }, h('span', { class: 'visually-hidden' }, 'Actions')))),
          h(
            'tbody',
            {},
            page.data.map((key) =>
              h(
                'tr',
                {},
                h('td', { class: 'mono' }, `${key.prefix}…`),
                h('td', {}, when(key.created_at)),
                h('td', {}, key.revoked_at ? h('span', { class: 'badge deleted' }, 'revoked') : h('span', { class: 'badge ok' }, 'active')),
                h(
                  'td',
                  { class: 'row-actions' },
                  key.revoked_at
                    ? null
                    : [
                        h('button', { type: 'button', class: 'button', 'aria-label': `Rotate ${key.prefix}`, onclick: () => rotate(key) }, 'Rotate'),
                        h('button', { type: 'button', class: 'button danger-quiet', 'aria-label': `Revoke ${key.prefix}`, onclick: () => revoke(key) }, 'Revoke'),
                      ],
                ),
              ),
            ),
          ),
        ),
      );
    } catch (error) {
      replace(list, failed(error, load));
    }
  }

  async function rotate(key) {
    const ok = await confirmDialog({ title: `Rotate ${key.prefix}…?`, body: 'A new key is made and this one stops working at once. Update your backend with the new key.', confirm: 'Rotate' });
    if (ok) make(key);
  }

  async function revoke(key) {
    const ok = await confirmDialog({ title: `Revoke ${key.prefix}…?`, body: 'Every call with this key is refused from now on.', confirm: 'Revoke', danger: true });
    if (!ok) return;
    try {
      await api.delete(`/api/v1/api-keys/${key.id}`);
      announce('The key is revoked.');
      await load();
    } catch (error) {
      replace(notice, failed(error));
    }
  }

  await load();
}
