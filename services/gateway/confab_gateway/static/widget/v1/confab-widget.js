/*! Confab chat widget v1 — one script tag:
 *
 *   <script src="https://chat.example.com/widget/v1/confab-widget.js"
 *           data-session-token="st_…" async></script>
 *
 * Options as data attributes: data-session-token (required), data-api-url (default: the
 * server this file came from), data-conversation-id (open it at once), data-open="true",
 * data-title, data-color (accent, any CSS color). Or without data-session-token:
 *
 *   ConfabWidget.mount({ token, apiUrl, conversationId, open, title, color, container })
 *
 * which resolves to { open(), close(), openConversation(id), destroy() }. `container`
 * puts the panel inline in that element instead of a launcher in the corner.
 */
(function () {
  'use strict';
  var script = document.currentScript;
  var base = new URL('./', script ? script.src : location.href).href;
  var loading = null;

  function load() {
    if (!loading) loading = import(base + 'widget.js');
    return loading;
  }

  var api = window.ConfabWidget || {};
  api.version = '1';
  api.mount = function (options) {
    return load().then(function (module) {
      return module.mount(options || {});
    });
  };
  window.ConfabWidget = api;

  var data = (script && script.dataset) || {};
  if (data.sessionToken) {
    var start = function () {
      api
        .mount({
          token: data.sessionToken,
          apiUrl: data.apiUrl,
          conversationId: data.conversationId,
          open: data.open === 'true',
          title: data.title,
          color: data.color,
        })
        .catch(function (error) {
          console.error('Confab widget:', error);
        });
    };
    if (document.body) start();
    else document.addEventListener('DOMContentLoaded', start, { once: true });
  }
})();
