// The team: everyone's role; with staff.manage, invite (the link is emailed when the
// deployment has a mail server, and shown once to the inviter either way), see where each
// invitation's email is, change roles, remove, and withdraw invitations. Only an owner is
// offered the owner role.

import { announce, avatar, confirmDialog, empty, failed, h, loading, replace, when } from '../dom.js';
import { shownOnce } from './secret.js';

const ROLES = ['owner', 'admin', 'agent', 'moderator'];
const MAIL_STATUS = {
  pending: 'being sent',
  sent: 'sent',
  refused: 'refused by their mail server',
  cancelled: 'not sent (withdrawn, accepted or expired first)',
  failed: 'could not be sent; send the link yourself',
  off: 'not sent: email is not set up',
};
const ROLE_HINT = {
  owner: 'everything, including owners',
  admin: 'everything but owners',
  agent: 'answers conversations',
  moderator: 'reports, hide/delete, bans',
};

export async function render(main, { api, me, can }) {
  const manage = can('staff.manage');
  const offered = ROLES.filter((r) => r !== 'owner' || me.role === 'owner');
  const notice = h('div', {});
  const members = h('div', { 'aria-live': 'polite' });
  const invitations = h('div', {});
  const email = h('input', { id: 'invite-email', type: 'email', required: true, autocomplete: 'off' });
  const role = h('select', { id: 'invite-role' }, offered.map((r) => h('option', { value: r, selected: r === 'agent' }, `${r} — ${ROLE_HINT[r]}`)));
  const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
  const invite = manage
    ? h(
        'form',
        {
          class: 'inline-form',
          onsubmit: async (event) => {
            event.preventDefault();
            error.hidden = true;
            try {
              const made = await api.post('/dashboard/api/invitations', { email: email.value.trim(), role: role.value });
              const link = new URL(made.link, location.origin).href;
              const expires = new Date(made.invitation.expires_at).toLocaleDateString();
              const how =
                made.email === 'pending'
                  ? `We are emailing it to them. You can also send it yourself; it works once and expires ${expires}.`
                  : `It was not emailed (${made.email === 'off' ? 'email is not set up' : 'email is unavailable right now'}): send it to them yourself; it works once and expires ${expires}.`;
              replace(notice, shownOnce(`Invitation link for ${made.invitation.email}`, link, how));
              email.value = '';
              await load();
            } catch (failure) {
              error.hidden = false;
              error.textContent = failure.message;
            }
          },
        },
        h('div', { class: 'field' }, h('label', { for: 'invite-email' }, 'Email'), email),
        h('div', { class: 'field' }, h('label', { for: 'invite-role' }, 'Role'), role),
        h('button', { type: 'submit', class: 'button primary' }, 'Invite'),
        error,
      )
    : null;
  replace(
    main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Team')),
    invite ? [h('h2', {}, 'Invite someone'), invite] : null,
    notice,
    h('h2', {}, 'Members'),
    members,
    manage ? [h('h2', {}, 'Pending invitations'), invitations] : null,
  );

  async function load() {
    replace(members, loading('the team'));
    try {
      const team = await api.get('/dashboard/api/staff');
      replace(
        members,
        h(
          'ul',
          { class: 'rows' },
          team.data.map((m) => {
            const mayChange = manage && (m.role !== 'owner' || me.role === 'owner');
            const you = m.user_id === me.member.user_id;
            return h(
              'li',
              { class: 'row', 'data-testid': 'member' },
              h('div', { class: 'person' }, avatar(m.name), h('div', {}, h('p', {}, h('strong', {}, m.name), you ? ' (you)' : ''), h('p', { class: 'muted' }, m.email))),
              mayChange
                ? h(
                    'label',
                    { class: 'role-select' },
                    h('span', { class: 'visually-hidden' }, `Role of ${m.name}`),
                    h('select', { onchange: (event) => changeRole(m, event.currentTarget) }, offered.concat(offered.includes(m.role) ? [] : [m.role]).map((r) => h('option', { value: r, selected: r === m.role }, r))),
                  )
                : h('span', { class: 'badge' }, m.role),
              mayChange && !you ? h('button', { type: 'button', class: 'button danger-quiet', 'aria-label': `Remove ${m.name}`, onclick: () => remove(m) }, 'Remove') : null,
            );
          }),
        ),
      );
    } catch (failure) {
      replace(members, failed(failure, load));
    }
    if (!manage) return;
    try {
      const pending = await api.get('/dashboard/api/invitations');
      if (!pending.data.length) replace(invitations, empty('No pending invitations'));
      else
        replace(
          invitations,
          h(
            'ul',
            { class: 'rows' },
            pending.data.map((i) =>
              h(
                'li',
                { class: 'row' },
                h('div', {}, h('p', {}, h('strong', {}, i.email), ' as ', i.role), h('p', { class: 'muted' }, 'expires ', when(i.expires_at)), mailState(i)),
                h('button', { type: 'button', class: 'button danger-quiet', 'aria-label': `Withdraw the invitation of ${i.email}`, onclick: () => withdraw(i) }, 'Withdraw'),
              ),
            ),
          ),
        );
    } catch (failure) {
      replace(invitations, failed(failure, load));
    }
  }

  async function changeRole(member, select) {
    try {
      await api.patch(`/dashboard/api/staff/${member.user_id}`, { role: select.value });
      announce(`${member.name} is now ${select.value}.`);
    } catch (failure) {
      select.value = member.role;
      replace(notice, failed(failure));
      return;
    }
    await load();
  }

  async function remove(member) {
    const ok = await confirmDialog({ title: `Remove ${member.name}?`, body: 'They are signed out everywhere and can no longer sign in.', confirm: 'Remove', danger: true });
    if (!ok) return;
    try {
      await api.delete(`/dashboard/api/staff/${member.user_id}`);
      announce(`${member.name} was removed.`);
      await load();
    } catch (failure) {
      replace(notice, failed(failure));
    }
  }

  // Where the invitation's email is, filled in once asked (one small request each).
  function mailState(invitation) {
    const line = h('p', { class: 'muted', 'data-testid': 'invitation-email' }, 'Email: …');
    api.get(`/dashboard/api/invitations/${encodeURIComponent(invitation.id)}/email`).then(
      (mail) => {
        line.textContent = `Email: ${MAIL_STATUS[mail.status] || mail.status}${mail.status === 'refused' && mail.refused_code ? ` (${mail.refused_code})` : ''}`;
      },
      () => {
        line.textContent = 'Email: unknown right now';
      },
    );
    return line;
  }

  async function withdraw(invitation) {
    try {
      await api.delete(`/dashboard/api/invitations/${invitation.id}`);
      announce('Invitation withdrawn.');
      await load();
    } catch (failure) {
      replace(notice, failed(failure));
    }
  }

  await load();
}
