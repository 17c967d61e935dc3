// Webhooks (webhooks.manage): the tenant's endpoints, add one (its signing secret shown
// once), pause or resume, and delete.

import { announce, confirmDialog, empty, failed, h, loading, replace, when } from '../dom.js';
import { shownOnce } from './secret.js';

export async function render(main, { api }) {
  const notice = h('div', {});
  const list = h('div', { 'aria-live': 'polite' });
  const url = h('input', { id: 'hook-url', type: 'url', required: true, placeholder: 'https://example.com/confab', autocomplete: 'off' });
  const types = h('input', { id: 'hook-types', required: true, value: 'message.*', 'aria-describedby': 'hook-types-hint' });
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const form = h(
    'form',
    {
      class: 'inline-form',
      onsubmit: async (event) => {
        event.preventDefault();
        error.hidden = true;
        try {
          const made = await api.post('/api/v1/webhooks', {
            url: url.value.trim(),
            event_types: types.value.split(',').map((t) => t.trim()).filter(Boolean),
          });
          replace(notice, shownOnce('Signing secret of the new endpoint', made.secret, 'Verify deliveries with it (docs/webhooks.md). It is not shown again.'));
          url.value = '';
          await load();
        } catch (failure) {
          error.hidden = false;
          error.textContent = failure.message;
        }
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'hook-url' }, 'Endpoint URL'), url),
    h('div', { class: 'field' }, h('label', { for: 'hook-types' }, 'Event types'), types, h('p', { class: 'hint', id: 'hook-types-hint' }, 'Comma-separated; * and message.* match many.')),
    h('button', { type: 'submit', class: 'button primary' }, 'Add endpoint'),
    error,
  );
  replace(main, h('div', { class: 'page-head' }, h('h1', {}, 'Webhooks')), h('p', { class: 'muted' }, 'Confab posts your workspace’s events to these endpoints, signed.'), form, notice, list);

  async function load() {
    replace(list, loading('webhooks'));
    try {
      const page = await api.get('/api/v1/webhooks', { limit: 100 });
      if (!page.data.length) {
        replace(list, empty('No endpoints yet', 'Add one above to receive events.'));
        return;
      }
      replace(
        list,
        h(
          'ul',
          { class: 'rows' },
          page.data.map((hook) =>
            h(
              'li',
              { class: 'row' },
              h('div', {}, h('p', { class: 'mono' }, hook.url), h('p', { class: 'muted' }, hook.event_types.join(', '), ' · added ', when(hook.created_at)), hook.disabled_reason ? h('p', { class: 'form-error' }, hook.disabled_reason) : null),
              h('span', { class: hook.enabled ? 'badge ok' : 'badge hidden' }, hook.enabled ? 'on' : 'paused'),
              h(
                'div',
                { class: 'row-actions' },
                h('button', { type: 'button', class: 'button', onclick: () => toggle(hook) }, hook.enabled ? 'Pause' : 'Resume'),
                h('button', { type: 'button', class: 'button danger-quiet', 'aria-label': `Delete ${hook.url}`, onclick: () => remove(hook) }, 'Delete'),
              ),
            ),
          ),
        ),
      );
    } catch (failure) {
      replace(list, failed(failure, load));
    }
  }

  async function toggle(hook) {
    try {
      await api.patch(`/api/v1/webhooks/${hook.id}`, { enabled: !hook.enabled });
      announce(hook.enabled ? 'Paused.' : 'Resumed.');
      await load();
    } catch (failure) {
      replace(notice, failed(failure));
    }
  }

  async function remove(hook) {
    const ok = await confirmDialog({ title: 'Delete this endpoint?', body: hook.url, confirm: 'Delete', danger: true });
    if (!ok) return;
    try {
      await api.delete(`/api/v1/webhooks/${hook.id}`);
      announce('Deleted.');
      await load();
    } catch (failure) {
      replace(notice, failed(failure));
    }
  }

  await load();
}
