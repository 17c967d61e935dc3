// Confab's push service worker (a classic script: a tenant's own one-line worker pulls it
// in with importScripts, see docs/notifications.md). It shows the notification the
// notifier pushed ({title, body, notification_id, conversation_id, count, url}, already
// in the user's language) and, on a click, focuses a window of the site and asks it to
// open the conversation, or opens the notification's link (or the worker's scope) when no
// window is open. Every push shows a notification (browsers require it: userVisibleOnly).
// It has no fetch handler: it never sits between the site and its network.

/* global self */
'use strict';

(function () {
  var OPEN = 'confab:open-conversation';

  function text(value, fallback) {
    return typeof value === 'string' && value ? value : fallback;
  }

  function link(value) {
    try {
      var url = new URL(value, self.registration.scope);
      return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
    } catch (error) {
      return null;
    }
  }

  self.addEventListener('install', function () {
    self.skipWaiting();
  });

  self.addEventListener('push', function (event) {
    var data = {};
    try {
      data = (event.data && event.data.json()) || {};
    } catch (error) {
      data = {};
    }
    var conversation = text(data.conversation_id, '');
    event.waitUntil(
      self.registration.showNotification(text(data.title, 'New message'), {
        body: text(data.body, ''),
        tag: conversation ? 'confab-' + conversation : undefined,
        renotify: Boolean(conversation),
        data: { conversation_id: conversation, url: text(data.url, ''), notification_id: text(data.notification_id, '') },
      }),
    );
  });

  self.addEventListener('notificationclick', function (event) {
    event.notification.close();
    var data = event.notification.data || {};
    event.waitUntil(
      self.clients.matchAll({ type: 'window', includeUncontrolled: true }).then(function (windows) {
        var open = windows.filter(function (w) { return w.focused; })[0] || windows[0];
        if (open) {
          open.postMessage({ type: OPEN, conversation_id: data.conversation_id });
          return open.focus();
        }
        return self.clients.openWindow(link(data.url) || self.registration.scope);
      }),
    );
  });
})();
