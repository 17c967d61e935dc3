// The notification settings panel: how the user is told about messages they have not read
// (GET/PATCH /api/widget/notification-preferences). A form of the user's own choices:
// everything, mentions only or nothing; email and push; quiet hours in the browser's time
// zone. Saving sends only what the form holds; the server checks every value.

import { h } from './dom.js';

const LEVELS = ['all', 'mentions', 'none'];

export function notificationSettings({ api, t, onDone }) {
  const status = h('p', { class: 'cw-settings-status', role: 'status', 'data-testid': 'settings-status' });
  const level = h(
    'select',
    { class: 'cw-input', id: 'cw-notify-level', 'data-testid': 'settings-level' },
    LEVELS.map((value) => h('option', { value, text: t(`settings.level.${value}`) })),
  );
  const email = h('input', { type: 'checkbox', id: 'cw-notify-email', 'data-testid': 'settings-email' });
  const push = h('input', { type: 'checkbox', id: 'cw-notify-push', 'data-testid': 'settings-push' });
  const quiet = h('input', { type: 'checkbox', id: 'cw-notify-quiet', 'data-testid': 'settings-quiet' });
  const from = h('input', { type: 'time', class: 'cw-input', value: '22:00', 'aria-label': t('settings.quietFrom') });
  const to = h('input', { type: 'time', class: 'cw-input', value: '07:00', 'aria-label': t('settings.quietTo') });
  const save = h('button', { class: 'cw-button', type: 'submit', disabled: true, 'data-testid': 'settings-save', text: t('action.save') });

  const row = (input, label) => h('div', { class: 'cw-settings-row' }, input, h('label', { for: input.id, text: label }));
  const form = h(
    'form',
    {
      class: 'cw-settings',
      'data-testid': 'notification-settings',
      onsubmit: async (event) => {
        event.preventDefault();
        save.disabled = true;
        status.textContent = '';
        const zone = Intl.DateTimeFormat().resolvedOptions().timeZone || 'UTC';
        try {
          await api.request('PATCH', '/notification-preferences', {
            json: {
              level: level.value,
              email: email.checked,
              push: push.checked,
              quiet_hours: quiet.checked ? { start: from.value, end: to.value } : null,
              time_zone: zone,
            },
          });
          status.textContent = t('settings.saved');
          if (onDone) onDone();
        } catch {
          status.textContent = t('settings.failed');
        } finally {
          save.disabled = false;
        }
      },
    },
    h('p', { class: 'cw-settings-intro', text: t('settings.intro') }),
    h('div', { class: 'cw-settings-row' }, h('label', { for: level.id, text: t('settings.level') }), level),
    row(email, t('settings.email')),
    row(push, t('settings.push')),
    row(quiet, t('settings.quiet')),
    h('div', { class: 'cw-settings-row' }, from, ' – ', to),
    save,
    status,
  );

  api.request('GET', '/notification-preferences').then(
    (prefs) => {
      level.value = prefs.level;
      email.checked = prefs.email;
      push.checked = prefs.push;
      quiet.checked = Boolean(prefs.quiet_hours);
      if (prefs.quiet_hours) {
        from.value = prefs.quiet_hours.start;
        to.value = prefs.quiet_hours.end;
      }
      save.disabled = false;
    },
    () => {
      status.textContent = t('settings.failed');
    },
  );
  return form;
}
