// Support and widget settings (settings.manage): "Send us a message" on or off, the
// greeting, team name and avatars the widget shows, the reply time, pre-chat fields,
// anonymous visitors and the origins allowed to use the public widget key, round-robin.

import { announce, failed, h, loading, replace } from '../dom.js';

const CHOICES = {
  reply_time: [['minutes', 'a few minutes'], ['hour', 'an hour'], ['day', 'a day']],
  prechat: [['off', 'Not asked'], ['optional', 'Optional'], ['required', 'Required']],
};

export async function render(main, { api }) {
  replace(main, h('h1', {}, 'Support & widget'), loading('the settings'));
  let setup;
  try {
    setup = await api.get('/api/v1/support/settings');
  } catch (error) {
    replace(main, h('h1', {}, 'Support & widget'), failed(error, () => render(main, { api })));
    return;
  }
  const s = setup.settings;
  const check = (id, label, checked, hint) =>
    h('div', { class: 'check' }, h('input', { id, type: 'checkbox', checked }), h('label', { for: id }, label), hint ? h('p', { class: 'hint' }, hint) : null);
  const select = (id, options, value) => h('select', { id }, options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)));
  const field = (id, label, input, hint) => h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null);
  const lines = (list) => list.join('\n');
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const form = h(
    'form',
    { class: 'settings stack', onsubmit: save },
    check('enabled', 'Visitors can start a conversation with the team (“Send us a message”)', s.enabled),
    field('team_name', 'Team name', h('input', { id: 'team_name', value: s.team_name, maxlength: '100' })),
    field('greeting', 'Greeting', h('textarea', { id: 'greeting', rows: '2', maxlength: '500' }, s.greeting), 'Shown before the first message.'),
    field('team_avatars', 'Team avatars', h('textarea', { id: 'team_avatars', rows: '2', 'aria-describedby': 'team_avatars-hint' }, lines(s.team_avatars)), 'Up to 5 https image URLs, one per line.'),
    field('reply_time', 'Typically replies in', select('reply_time', CHOICES.reply_time, s.reply_time)),
    field('prechat_name', 'Ask visitors their name', select('prechat_name', CHOICES.prechat, s.prechat_name)),
    field('prechat_email', 'Ask visitors their email', select('prechat_email', CHOICES.prechat, s.prechat_email)),
    check('allow_anonymous', 'Anonymous visitors may write in (a visitor session from the public widget key)', s.allow_anonymous),
    field('allowed_origins', 'Allowed origins', h('textarea', { id: 'allowed_origins', rows: '3', 'aria-describedby': 'allowed_origins-hint' }, lines(s.allowed_origins)), 'The sites that may use the public widget key, one per line, as https://shop.example.com.'),
    check('round_robin', 'Assign new conversations in turn among agents who are online', s.round_robin),
    error,
    h('div', {}, h('button', { type: 'submit', class: 'button primary' }, 'Save settings')),
  );
  replace(main, h('div', { class: 'page-head' }, h('h1', {}, 'Support & widget')), form);

  async function save(event) {
    event.preventDefault();
    error.hidden = true;
    const value = (id) => form.querySelector(`#${id}`).value;
    const list = (id) => value(id).split(/\s+/).map((x) => x.trim()).filter(Boolean);
    const on = (id) => form.querySelector(`#${id}`).checked;
    try {
      await api.call('PUT', '/api/v1/support/settings', {
        enabled: on('enabled'),
        greeting: value('greeting').trim(),
        team_name: value('team_name').trim(),
        team_avatars: list('team_avatars'),
        reply_time: value('reply_time'),
        prechat_name: value('prechat_name'),
        prechat_email: value('prechat_email'),
        allow_anonymous: on('allow_anonymous'),
        allowed_origins: list('allowed_origins'),
        round_robin: on('round_robin'),
      });
      announce('Settings saved.');
      error.hidden = false;
      error.className = 'notice';
      error.textContent = 'Saved. The widget shows the new settings on its next load.';
    } catch (failure) {
      error.className = 'form-error';
      error.hidden = false;
      error.textContent = failure.details && Object.keys(failure.details).length ? `${failure.message} (${Object.keys(failure.details).join(', ')})` : failure.message;
    }
  }
}
