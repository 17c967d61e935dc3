// "Notify me in this browser" for the signed-in staff member (web push, see
// docs/notifications.md): a button in the account menu, shown only where the browser has
// service workers and PushManager. The browser side is the widget's BrowserPush (one
// implementation, served by the same gateway); here it registers /dashboard/push-worker.js
// (scope /dashboard/) and talks to /dashboard/api/push…, the staff member's own
// subscriptions. A click on a notification opens the conversation in the inbox.

import { BrowserPush, onPushClick, pushSupported } from '/widget/v1/notifications.js';
import { announce, h } from './dom.js';

const WORKER = { url: '/dashboard/push-worker.js', scope: '/dashboard/' };
const TEXT = {
  enable: 'Notify me in this browser',
  disable: 'Stop notifying this browser',
  on: 'This browser will show a notification for unread messages.',
  off: 'This browser will not show notifications any more.',
  denied: 'Notifications are blocked for this site. Allow them in your browser’s site settings, then try again.',
  failed: 'This browser could not turn notifications on or off. Try again later.',
};

let stopClicks = () => {};

/** The account menu's push button (null where the browser cannot do web push); listens
 *  for notification clicks (once, however often the member signs in again). */
export function pushMenu({ api, navigate }) {
  stopClicks();
  if (!pushSupported()) return null;
  const push = new BrowserPush(
    WORKER,
    {
      config: () => api.get('/dashboard/api/push'),
      list: () => api.get('/dashboard/api/push/subscriptions'),
      save: (json) => api.post('/dashboard/api/push/subscriptions', json),
      remove: (id) => api.delete(`/dashboard/api/push/subscriptions/${encodeURIComponent(id)}`),
    },
    'confab.dashboard.push',
  );
  let on = false;
  const status = h('span', { role: 'status', 'data-testid': 'push-status' }); // refusals only
  const button = h('button', { type: 'button', class: 'button quiet', disabled: true, 'data-testid': 'push-toggle' });
  const show = (enabled, message, refused = false) => {
    on = enabled;
    button.textContent = on ? TEXT.disable : TEXT.enable;
    button.disabled = false;
    status.textContent = refused ? message : '';
    if (message && !refused) announce(message); // the button says the state
  };
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      if (on) {
        await push.disable();
        show(false, TEXT.off);
      } else {
        await push.enable();
        show(true, TEXT.on);
      }
    } catch (error) {
      show(on, TEXT[error.reason === 'denied' ? 'denied' : 'failed'], true);
    }
  });
  push.enabled().then(
    (enabled) => show(enabled),
    () => show(false),
  );
  stopClicks = onPushClick((id) => navigate(`inbox/${id}`));
  return h('span', { class: 'push' }, button, status);
}
