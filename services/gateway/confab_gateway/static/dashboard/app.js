// The Confab dashboard: sign-in, the layout and its navigation (only what the staff
// member's role may use), and a hash router over the pages in pages/. Plain ES modules
// served by the gateway, no build step (see the README's "The dashboard").

import { Api, ApiError } from './api.js';
import { announce, failed, h, loading, replace } from './dom.js';
import { pushMenu } from './push.js';

const api = new Api();
const app = document.getElementById('app');
const WORKSPACE_KEY = 'confab.dashboard.workspace';

// Every page: where, its name, what permission it needs, and its module.
export const PAGES = [
  { path: 'inbox', label: 'Inbox', permission: 'conversations.read', module: './pages/inbox.js', subroutes: true },
  { path: 'conversations', label: 'Conversations', permission: 'conversations.read', module: './pages/conversations.js', subroutes: true },
  { path: 'reports', label: 'Reports', permission: 'conversations.read', module: './pages/reports.js' },
  { path: 'moderation', label: 'Moderation', permission: 'moderation', module: './pages/moderation.js' },
  { path: 'automod', label: 'AutoMod', permission: 'moderation', module: './pages/automod.js' },
  { path: 'users', label: 'Users', permission: 'conversations.read', module: './pages/users.js' },
  { path: 'settings/support', label: 'Support & widget', permission: 'settings.manage', module: './pages/support.js', group: 'Settings' },
  { path: 'settings/keys', label: 'API keys', permission: 'keys.manage', module: './pages/keys.js', group: 'Settings' },
  { path: 'settings/webhooks', label: 'Webhooks', permission: 'webhooks.manage', module: './pages/webhooks.js', group: 'Settings' },
  { path: 'settings/team', label: 'Team', permission: 'conversations.read', module: './pages/team.js', group: 'Settings' },
];

let me = null;
let cleanup = null;
let current = null; // the page shown, which may follow its own sub-routes
let available = PAGES;

function hashParams() {
  const raw = location.hash.replace(/^#/, '');
  return raw.includes('=') && !raw.startsWith('/') ? new URLSearchParams(raw) : null;
}

async function boot() {
  const params = hashParams();
  if (params && params.get('workspace')) localStorage.setItem(WORKSPACE_KEY, params.get('workspace'));
  if (params && params.get('accept')) return showAccept(params.get('accept'));
  try {
    me = await api.get('/dashboard/api/me');
  } catch (error) {
    if (error instanceof ApiError && error.status === 401) return showSignIn();
    return replace(app, h('main', { id: 'main', class: 'boot' }, failed(error, boot)));
  }
  return start();
}

function can(permission) {
  return Boolean(me && me.permissions.includes(permission));
}

// -- signing in ------------------------------------------------------------------------------

function field(label, input, hint) {
  const id = input.id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), input, hint ? h('p', { class: 'hint', id: `${id}-hint` }, hint) : null);
}

function authPage(title, lead, form) {
  app.removeAttribute('aria-busy');
  replace(
    app,
    h(
      'main',
      { id: 'main', class: 'auth', tabindex: '-1' },
      h('div', { class: 'auth-card' }, h('p', { class: 'brand' }, h('span', { class: 'mark', 'aria-hidden': 'true' }), 'Confab'), h('h1', {}, title), h('p', { class: 'muted' }, lead), form),
    ),
  );
  const first = form.querySelector('input:not([value]), input');
  if (first) first.focus();
}

function errorBox() {
  return h('p', { class: 'form-error', role: 'alert', hidden: true });
}

function showError(box, error) {
  box.hidden = false;
  box.textContent = error.message;
}

function showSignIn(notice) {
  const params = hashParams();
  const workspace = h('input', {
    id: 'workspace',
    name: 'workspace',
    required: true,
    autocomplete: 'organization',
    value: (params && params.get('workspace')) || localStorage.getItem(WORKSPACE_KEY) || '',
  });
  const email = h('input', { id: 'email', name: 'email', type: 'email', required: true, autocomplete: 'username' });
  const password = h('input', { id: 'password', name: 'password', type: 'password', required: true, autocomplete: 'current-password' });
  const error = errorBox();
  const submit = h('button', { type: 'submit', class: 'button primary wide' }, 'Sign in');
  const form = h(
    'form',
    {
      class: 'stack',
      novalidate: false,
      onsubmit: async (event) => {
        event.preventDefault();
        submit.disabled = true;
        error.hidden = true;
        try {
          me = await api.post('/dashboard/api/sign-in', {
            workspace_id: workspace.value.trim(),
            email: email.value.trim(),
            password: password.value,
          });
          localStorage.setItem(WORKSPACE_KEY, workspace.value.trim());
          if (hashParams()) history.replaceState(null, '', location.pathname);
          start();
        } catch (failure) {
          showError(error, failure);
          password.select();
          password.focus();
        } finally {
          submit.disabled = false;
        }
      },
    },
    notice ? h('p', { class: 'notice', role: 'status' }, notice) : null,
    field('Workspace ID', workspace, 'It starts with ws_; your invitation or confab up shows it.'),
    field('Email', email),
    field('Password', password),
    error,
    submit,
  );
  authPage('Sign in to your workspace', 'Answer conversations, moderate and run your workspace.', form);
}

function showAccept(token) {
  const name = h('input', { id: 'name', name: 'name', required: true, autocomplete: 'name', maxlength: '200' });
  const password = h('input', {
    id: 'new-password',
    name: 'password',
    type: 'password',
    required: true,
    minlength: '10',
    autocomplete: 'new-password',
    'aria-describedby': 'new-password-hint',
  });
  const error = errorBox();
  const submit = h('button', { type: 'submit', class: 'button primary wide' }, 'Join the team');
  const form = h(
    'form',
    {
      class: 'stack',
      onsubmit: async (event) => {
        event.preventDefault();
        submit.disabled = true;
        error.hidden = true;
        try {
          me = await api.post('/dashboard/api/invitations/accept', { token, name: name.value.trim(), password: password.value });
          localStorage.setItem(WORKSPACE_KEY, me.workspace_id);
          history.replaceState(null, '', location.pathname);
          start();
        } catch (failure) {
          showError(error, failure);
        } finally {
          submit.disabled = false;
        }
      },
    },
    field('Your name', name),
    field('Choose a password', password, 'At least 10 characters.'),
    error,
    submit,
  );
  authPage('You are invited', 'Set your name and a password to join the team.', form);
}

// -- the layout ----------------------------------------------------------------------------------

function start() {
  api.csrf = me.csrf_token;
  api.onSignedOut = () => {
    me = null;
    if (cleanup) cleanup();
    cleanup = null;
    current = null;
    showSignIn('Your session ended. Sign in again.');
  };
  const pages = PAGES.filter((page) => can(page.permission));
  available = pages;
  const links = [];
  let group = null;
  for (const page of pages) {
    if (page.group && page.group !== group) {
      group = page.group;
      links.push(h('li', { class: 'nav-group', 'aria-hidden': 'true' }, group));
    }
    links.push(h('li', {}, h('a', { href: `#/${page.path}`, dataset: { path: page.path } }, page.label)));
  }
  const menu = h(
    'div',
    { class: 'account' },
    h('span', { class: 'who' }, h('span', { class: 'name' }, me.member.name), h('span', { class: 'role' }, me.role)),
    pushMenu({ api, navigate }),
    h('button', { type: 'button', class: 'button quiet', onclick: () => signOut(false) }, 'Sign out'),
    h('button', { type: 'button', class: 'button quiet', onclick: () => signOut(true) }, 'Sign out everywhere'),
  );
  app.removeAttribute('aria-busy');
  replace(
    app,
    h(
      'div',
      { class: 'shell' },
      h(
        'header',
        { class: 'topbar' },
        h('p', { class: 'brand' }, h('span', { class: 'mark', 'aria-hidden': 'true' }), 'Confab', h('span', { class: 'workspace' }, me.workspace_name)),
        menu,
      ),
      h('nav', { class: 'sidebar', 'aria-label': 'Dashboard' }, h('ul', {}, links)),
      h('main', { id: 'main', class: 'content', tabindex: '-1' }),
    ),
  );
  window.onhashchange = route;
  if (!location.hash.startsWith('#/')) {
    // Who answers lands in the inbox, a moderator in the moderation queue.
    const landing = can('conversations.reply') ? 'inbox' : can('moderation') ? 'moderation' : 'users';
    const first = pages.find((p) => p.path === landing) || pages[0];
    history.replaceState(null, '', `#/${first ? first.path : ''}`);
  }
  route();
}

async function signOut(everywhere) {
  try {
    await api.post(everywhere ? '/dashboard/api/sign-out-everywhere' : '/dashboard/api/sign-out');
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      announce(error.message);
      return;
    }
  }
  me = null;
  if (cleanup) cleanup();
  cleanup = null;
  current = null;
  window.onhashchange = null;
  showSignIn(everywhere ? 'You are signed out on every device.' : 'You are signed out.');
}

export function navigate(path) {
  location.hash = `#/${path}`;
}

// Each route() that changes page is one visit. A page that finishes loading after the
// address moved on is cleaned up. If the newest visit had already drawn its page and the
// late one drew over it (main's children are no longer the ones the newest left), the
// newest page is drawn again; if it is still loading, it draws last anyway. A late page
// that drew only into its own elements (most do) leaves the newest page, and the focus
// in it, alone.
let visits = 0;
let drawn = 0; // the last visit that finished drawing
let drawnChildren = []; // main's children as that visit left them

async function route() {
  if (!me) return;
  const main = document.getElementById('main');
  const path = location.hash.replace(/^#\/?/, '');
  const page = PAGES.find((p) => path === p.path || path.startsWith(`${p.path}/`));
  for (const link of document.querySelectorAll('.sidebar a')) {
    const current = page && link.dataset.path === page.path;
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (page && page === current && page.subroutes && available.includes(page)) return; // its own
  const visit = ++visits;
  if (cleanup) cleanup();
  cleanup = null;
  current = page;
  if (!page) {
    replace(main, h('h1', {}, 'Page not found'), h('p', {}, 'There is no such page in the dashboard.'));
    drawn = visit;
    drawnChildren = [...main.childNodes];
    main.focus();
    return;
  }
  if (!available.includes(page)) {
    // No UI at all for what the role may not use: only the refusal.
    replace(
      main,
      h('h1', {}, 'You do not have access'),
      h('p', { 'data-testid': 'forbidden' }, `Your role (${me.role}) does not include ${page.label.toLowerCase()}. Ask an owner or admin if you need it.`),
    );
    drawn = visit;
    drawnChildren = [...main.childNodes];
    main.focus();
    return;
  }
  replace(main, loading(page.label.toLowerCase()));
  document.title = `${page.label} · Confab`;
  try {
    const module = await import(page.module);
    if (visit !== visits) return; // the address moved on before the page loaded
    const rest = path.slice(page.path.length).replace(/^\//, '');
    const done = (await module.render(main, { api, me, can, navigate, rest })) || null;
    if (visit !== visits) {
      if (done) done();
      const untouched = main.childNodes.length === drawnChildren.length && drawnChildren.every((node, i) => main.childNodes[i] === node);
      if (drawn === visits && !untouched) {
        current = null; // draw the newest page again, whatever it is
        route();
      }
      return;
    }
    cleanup = done;
  } catch (error) {
    if (visit !== visits) return;
    replace(main, failed(error, route));
  }
  drawn = visit;
  drawnChildren = [...main.childNodes];
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

boot();
