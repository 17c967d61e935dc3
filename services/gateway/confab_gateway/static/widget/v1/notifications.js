// The notification settings panel: how the user is told about messages they have not read
// (GET/PATCH /api/widget/notification-preferences). A form of the user's own choices:
// everything, mentions only or nothing; email and push; quiet hours in the browser's time
// zone. Saving sends only what the form holds; the server checks every value.
//
// "Notify me in this browser" (web push, docs/notifications.md): shown only where the
// browser has service workers and PushManager and a worker can be registered. A browser
// registers a service worker only from the page's own origin, so on a tenant's site the
// worker is the tenant's one-line file (`pushWorker` option: importScripts of the
// gateway's /widget/v1/push-worker.js); on the gateway's own pages it is that file. The
// permission is asked only when the user clicks; then the page subscribes with the
// deployment's VAPID key and posts the subscription. Turning it off unsubscribes the
// browser and deletes the subscription on the server. BrowserPush is the browser side
// alone (the dashboard uses it with its own routes); pushControl is the widget's control.

import { h } from './dom.js';

const OPEN = 'confab:open-conversation';
const ID = /^[A-Za-z0-9_-]{1,64}$/;

const LEVELS = ['all', 'mentions', 'none'];

export function notificationSettings({ api, t, onDone, pushWorker = null }) {
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
    pushControl({ api, t, worker: pushWorker }),
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

// -- web push in this browser -----------------------------------------------------------------

export function pushSupported() {
  return (
    typeof window !== 'undefined' &&
    window.isSecureContext &&
    'serviceWorker' in navigator &&
    'PushManager' in window &&
    'Notification' in window
  );
}

/** The service worker the widget registers, or null if there is none it may register:
 *  the page's `pushWorker` option (same origin as the page), else the gateway's own file
 *  when the page is the gateway's. */
export function widgetPushWorker(option, base) {
  try {
    if (option) {
      const url = new URL(option, location.href);
      return url.origin === location.origin ? { url: url.href } : null;
    }
    const own = new URL('/widget/v1/push-worker.js', base);
    return own.origin === location.origin ? { url: own.href } : null;
  } catch {
    return null;
  }
}

/** Why turning push on did not work: `denied` (the user or the browser said no) or
 *  `failed` (the browser's push service or the server). */
export class PushRefused extends Error {
  constructor(reason, cause) {
    super(reason);
    this.reason = reason;
    this.cause = cause;
  }
}

/** The browser side of web push for one user: `routes` are {config(), list(), save(json),
 *  remove(id)} on the server; `worker` is {url, scope?}. */
export class BrowserPush {
  constructor(worker, routes, key = 'confab.push') {
    this.worker = worker;
    this.routes = routes;
    this.scope = worker.scope || new URL('./', worker.url).href;
    this.key = `${key}:${this.scope}`;
    this.subscription = null; // the one this page made (the browser's may not say so yet)
  }

  remembered() {
    try {
      return JSON.parse(localStorage.getItem(this.key) || 'null');
    } catch {
      return null;
    }
  }

  remember(value) {
    try {
      if (value) localStorage.setItem(this.key, JSON.stringify(value));
      else localStorage.removeItem(this.key);
    } catch {
      // storage refused (private mode): only this page remembers
    }
  }

  async current() {
    if (this.subscription) return this.subscription;
    const registration = await navigator.serviceWorker.getRegistration(this.scope);
    return registration ? registration.pushManager.getSubscription() : null;
  }

  /** Whether this browser is subscribed for this user (the server still has it). */
  async enabled() {
    const subscription = await this.current();
    const stored = this.remembered();
    if (!subscription || !stored || stored.endpoint !== subscription.endpoint) return false;
    const list = await this.routes.list();
    return list.data.some((target) => target.id === stored.id);
  }

  /** Asks the permission (call it from the click itself), registers the worker,
   *  subscribes with the server's VAPID key and saves the subscription there. */
  async enable() {
    const permission = await Notification.requestPermission();
    if (permission !== 'granted') throw new PushRefused('denied');
    let subscription;
    try {
      const registration = await navigator.serviceWorker.register(this.worker.url, { scope: this.scope });
      await activated(registration);
      const config = await this.routes.config();
      const key = fromBase64Url(config.vapid_public_key);
      subscription = await registration.pushManager.getSubscription();
      if (subscription && !sameKey(subscription.options.applicationServerKey, key)) {
        await subscription.unsubscribe();
        subscription = null;
      }
      if (!subscription) {
        subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
      }
    } catch (error) {
      throw new PushRefused(error && error.name === 'NotAllowedError' ? 'denied' : 'failed', error);
    }
    let saved;
    try {
      saved = await this.routes.save(subscription.toJSON());
    } catch (error) {
      await subscription.unsubscribe().catch(() => {});
      throw new PushRefused('failed', error);
    }
    this.subscription = subscription;
    this.remember({ endpoint: subscription.endpoint, id: saved.id });
  }

  /** Unsubscribes this browser and deletes its subscription on the server. */
  async disable() {
    const subscription = await this.current();
    const stored = this.remembered();
    let id = stored && (!subscription || stored.endpoint === subscription.endpoint) ? stored.id : null;
    if (!id && subscription) id = (await this.routes.save(subscription.toJSON())).id; // learn it
    if (id) {
      try {
        await this.routes.remove(id);
      } catch (error) {
        if (error.status !== 404) throw error; // gone already (expired, removed elsewhere)
      }
    }
    if (subscription) await subscription.unsubscribe().catch(() => {});
    this.subscription = null;
    this.remember(null);
  }
}

function activated(registration) {
  const worker = registration.installing || registration.waiting || registration.active;
  if (!worker || worker.state === 'activated') return Promise.resolve(registration);
  return new Promise((resolve, reject) => {
    worker.addEventListener('statechange', () => {
      if (worker.state === 'activated') resolve(registration);
      else if (worker.state === 'redundant') reject(new Error('the service worker did not start'));
    });
  });
}

function fromBase64Url(text) {
  const plain = atob(text.replace(/-/g, '+').replace(/_/g, '/') + '='.repeat((4 - (text.length % 4)) % 4));
  return Uint8Array.from(plain, (c) => c.charCodeAt(0));
}

function sameKey(buffer, key) {
  if (!buffer) return false;
  const bytes = new Uint8Array(buffer);
  return bytes.length === key.length && bytes.every((b, i) => b === key[i]);
}

/** Calls `open(conversationId)` when a click on a notification asks this page to open one;
 *  returns the function that stops listening. */
export function onPushClick(open) {
  if (!pushSupported()) return () => {};
  const listener = (event) => {
    const data = event.data || {};
    if (data.type === OPEN && typeof data.conversation_id === 'string' && ID.test(data.conversation_id)) {
      open(data.conversation_id);
    }
  };
  navigator.serviceWorker.addEventListener('message', listener);
  return () => navigator.serviceWorker.removeEventListener('message', listener);
}

/** The widget's "Notify me in this browser" control, or nothing where it cannot work. */
export function pushControl({ api, t, worker }) {
  if (!worker || !pushSupported()) return null;
  const push = new BrowserPush(worker, {
    config: () => api.request('GET', '/push'),
    list: () => api.request('GET', '/push/subscriptions'),
    save: (json) => api.request('POST', '/push/subscriptions', { json }),
    remove: (id) => api.request('DELETE', `/push/subscriptions/${encodeURIComponent(id)}`),
  });
  let on = false;
  const note = h('p', { class: 'cw-settings-status', role: 'status', 'data-testid': 'push-status' });
  const button = h('button', { class: 'cw-button', type: 'button', disabled: true, 'data-testid': 'push-toggle' });
  const show = (enabled, message) => {
    on = enabled;
    button.textContent = t(on ? 'push.disable' : 'push.enable');
    button.disabled = false;
    note.textContent = message === undefined ? (on ? t('push.on') : '') : message;
  };
  button.addEventListener('click', async () => {
    button.disabled = true;
    note.textContent = '';
    if (on) {
      try {
        await push.disable();
        show(false, t('push.off'));
      } catch {
        show(true, t('push.failed'));
      }
      return;
    }
    try {
      await push.enable();
      show(true);
    } catch (error) {
      show(false, t(error.reason === 'denied' ? 'push.denied' : 'push.failed'));
    }
  });
  push.enabled().then(
    (enabled) => show(enabled),
    () => show(false),
  );
  return h('div', { class: 'cw-settings-push', 'data-testid': 'push-settings' }, button, note);
}
