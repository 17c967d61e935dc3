/*! Confab chat widget v1 — one script tag:
 *
 *   <script src="https://chat.example.com/widget/v1/confab-widget.js"
 *           data-session-token="st_…" async></script>
 *
 * Options as data attributes: data-session-token (or data-app-key: the workspace's public
 * key, for anonymous visitors when it allows them), data-session-expires-at,
 * data-api-url (default: the server this file came from), data-conversation-id (open it at
 * once), data-open="true", data-title, data-color (accent, any CSS color), data-locale
 * (en, es, de, fr, pt, ar; default: the browser's language), data-strings (JSON: your own
 * wording for any text), data-unread-in-title="true" (the unread count in the page title),
 * data-push-worker (your one-line service worker on this site, for "Notify me in this
 * browser": docs/notifications.md).
 * ConfabWidget.ready resolves to the widget: { open(), close(), openConversation(id),
 * setSession(token, expiresAt), destroy(), client }. Or without data-session-token:
 *
 *   ConfabWidget.mount({ sessionToken, refreshSession: async () => newToken, … })
 *
 * with the same options in camelCase (and `container`: an element to draw the panel in
 * instead of a launcher in the corner), which resolves to the same.
 */
(function () {
  'use strict';
  var script = document.currentScript;
  var root = new URL('./', script ? script.src : location.href).href;
  // The gateway names its current build here; files under it are cached for a year.
  var build = '__CONFAB_BUILD__';
  var base = /^[0-9a-f]{6,64}$/.test(build) ? root + build + '/' : root;
  var MODULES = ['widget.js', 'client.js', 'api.js', 'realtime.js', 'dom.js', 'emoji.js',
    'i18n.js', 'links.js', 'support.js', 'vendor/linkify-it-6.1.0.mjs',
    'vendor/uc.micro-3.0.0.mjs'];
  var loading = null;

  function load() {
    if (!loading) {
      // Every module at once, instead of one level of imports after the other.
      var files = MODULES.map(function (name) {
        return ['modulepreload', name, '', 'anonymous'];
      });
      files.push(['preload', 'widget.css', 'style', null]);
      files.push(['preload', 'locales/en.json', 'fetch', 'anonymous']);
      files.forEach(function (file) {
        var link = document.createElement('link');
        link.rel = file[0];
        link.href = base + file[1];
        if (file[2]) link.as = file[2];
        if (file[3]) link.crossOrigin = file[3];
        document.head.appendChild(link);
      });
      loading = import(base + 'widget.js');
    }
    return loading;
  }

  var api = window.ConfabWidget || {};
  api.version = '1';
  api.mount = function (options) {
    var given = Object.assign({}, options);
    if (!given.apiUrl) given.apiUrl = new URL('../../', root).href;
    // An anonymous visitor (appKey, no session): a visitor session first (support.js).
    var visitor = given.sessionToken || !given.appKey
      ? Promise.resolve()
      : import(base + 'support.js').then(function (support) {
        return support.visitorSession(given.apiUrl, given.appKey).then(function (session) {
          given.sessionToken = session.token;
          given.sessionExpiresAt = session.expires_at;
        });
      });
    return Promise.all([load(), visitor]).then(function (loaded) {
      var module = loaded[0];
      var widget = module.mount(given);
      return widget.ready.then(function () {
        return widget;
      });
    });
  };
  window.ConfabWidget = api;

  var data = (script && script.dataset) || {};
  if (data.sessionToken || data.appKey) {
    var strings;
    try {
      strings = data.strings ? JSON.parse(data.strings) : undefined;
    } catch (error) {
      console.error('Confab widget: data-strings is not valid JSON', error);
    }
    var start = function () {
      api.ready = api.mount({
        sessionToken: data.sessionToken,
        appKey: data.appKey,
        sessionExpiresAt: data.sessionExpiresAt,
        apiUrl: data.apiUrl,
        conversationId: data.conversationId,
        open: data.open === 'true',
        title: data.title,
        color: data.color,
        locale: data.locale,
        strings: strings,
        unreadInTitle: data.unreadInTitle === 'true',
        pushWorker: data.pushWorker,
      });
      api.ready.catch(function (error) {
        console.error('Confab widget:', error);
      });
    };
    if (document.body) start();
    else document.addEventListener('DOMContentLoaded', start, { once: true });
  }
})();
