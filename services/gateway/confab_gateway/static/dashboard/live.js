// The dashboard's socket: the widget's pusher-js wrapper (Realtime, the vendored
// pusher-js) against the fanout, with the staff member's channel signatures.

import { loadPusher, Realtime } from '/widget/v1/realtime.js';

export async function connect(api, me, handlers) {
  const Pusher = await loadPusher(new URL('/widget/v1/', location.origin).href);
  const authorize = (socketId, channelName) =>
    api.post('/dashboard/api/broadcasting/auth', { socket_id: socketId, channel_name: channelName });
  return new Realtime(Pusher, { appKey: me.app_key, websocketUrl: me.websocket_url, authorize }, {
    state: () => {},
    event: () => {},
    subscribed: () => {},
    failed: () => {},
    members: () => {},
    refused: () => {},
    ...handlers,
  });
}

export function inboxChannel(workspaceId) {
  return `private-inbox-${workspaceId}`;
}

export function conversationChannel(conversationId) {
  return `private-conversation.${conversationId}`;
}
