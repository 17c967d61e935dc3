// Drives real Pusher clients (pusher-js, Laravel Echo) for the fanout's conformance tests.
//
// Reads one JSON command per line on stdin; writes one JSON record per line on stdout
// for everything the clients see. Every record carries the client's "id".
//
//   {"cmd":"pusher","id":"a","key":"…","host":"127.0.0.1","port":6001,
//    "authEndpoint":"http://…","userAuthEndpoint":"http://…","params":{…},"options":{…}}
//   {"cmd":"subscribe","id":"a","channel":"presence-room"}
//   {"cmd":"unsubscribe","id":"a","channel":"…"}
//   {"cmd":"trigger","id":"a","channel":"…","event":"client-x","data":{…}}
//   {"cmd":"send","id":"a","event":"pusher:ping","data":{}}      (a raw protocol frame)
//   {"cmd":"members","id":"a","channel":"presence-room"}
//   {"cmd":"signin","id":"a"}
//   {"cmd":"echo","id":"e","key":"…","host":…,"port":…,"authEndpoint":"…","params":{…}}
//   {"cmd":"echo_private","id":"e","channel":"orders.1","listen":".message.created"}
//   {"cmd":"echo_whisper","id":"e","channel":"orders.1","event":"typing","data":{…}}
//   {"cmd":"echo_listen_whisper","id":"e","channel":"orders.1","event":"typing"}
//   {"cmd":"echo_join","id":"e","channel":"room.1"}
//   {"cmd":"disconnect","id":"a"}
//   {"cmd":"resume","id":"a","channel":"private-conversation.x","when":"connected"|"subscribed"}
//     confab:resume on every reconnect, after_seq = the last event_seq seen on the channel:
//     "connected": as soon as the socket is back, before pusher-js re-subscribes;
//     "subscribed": once the re-subscription succeeded.
//
// "headers" on pusher/echo go with the auth requests (e.g. a widget's session token).
// Records: {"id","type":"state"|"message"|"event"|"error"|"members"|"user_event"|…, …}

'use strict';

const readline = require('node:readline');
const Pusher = require('pusher-js');

let Echo = null;
const clients = {};

function out(record) {
  process.stdout.write(JSON.stringify(record) + '\n');
}

function pusherOptions(cmd) {
  return {
    cluster: 'mt1',
    wsHost: cmd.host,
    wsPort: cmd.port,
    forceTLS: false,
    enabledTransports: ['ws'],
    disableStats: true,
    channelAuthorization: {
      endpoint: cmd.authEndpoint || 'http://127.0.0.1:1/none',
      transport: 'ajax',
      params: cmd.params || {},
      headers: cmd.headers || {},
    },
    userAuthentication: {
      endpoint: cmd.userAuthEndpoint || 'http://127.0.0.1:1/none',
      transport: 'ajax',
      params: cmd.params || {},
      headers: cmd.headers || {},
    },
    ...(cmd.options || {}),
  };
}

function sendResume(id, channel) {
  const client = clients[id];
  const afterSeq = client.lastSeq[channel] || 0;
  client.pusher.send_event('confab:resume', { channel, after_seq: afterSeq });
  out({ id, type: 'resume_sent', channel, after_seq: afterSeq });
}

function watchConnection(id, pusher) {
  let connectedBefore = false;
  pusher.connection.bind('state_change', (s) => {
    out({ id, type: 'state', previous: s.previous, current: s.current,
          socket_id: pusher.connection.socket_id || null });
    if (s.current !== 'connected') return;
    const client = clients[id];
    if (connectedBefore && client) {
      for (const [channel, when] of Object.entries(client.resume)) {
        if (when === 'connected') sendResume(id, channel);
      }
    }
    connectedBefore = true;
  });
  pusher.connection.bind('message', (m) =>
    out({ id, type: 'message', event: m.event, channel: m.channel || null,
          data: m.data === undefined ? null : m.data, user_id: m.user_id || null }));
  // A pusher:error arrives as {type:'PusherError', data:{code, message}}; during the
  // handshake it is wrapped once more in {type:'WebSocketError', error:{…}}.
  pusher.connection.bind('error', (e) => {
    const inner = e && e.error && e.error.data ? e.error : e;
    out({ id, type: 'error', error: (inner && inner.data) || String(e && e.type) });
  });
  pusher.user.bind_global((event, data) => out({ id, type: 'user_event', event, data }));
}

function members(channel) {
  const ids = [];
  const info = {};
  channel.members.each((m) => { ids.push(m.id); info[m.id] = m.info; });
  return { count: channel.members.count, ids: ids.sort(), info, me: channel.members.me };
}

function handle(cmd) {
  const id = cmd.id;
  const client = clients[id];
  switch (cmd.cmd) {
    case 'pusher': {
      const pusher = new Pusher(cmd.key, pusherOptions(cmd));
      clients[id] = { pusher, lastSeq: {}, resume: {} };
      watchConnection(id, pusher);
      break;
    }
    case 'subscribe': {
      const channel = client.pusher.subscribe(cmd.channel);
      channel.bind_global((event, data) => {
        const record = { id, type: 'event', channel: cmd.channel, event, data };
        if (event === 'pusher:subscription_succeeded' && channel.members) {
          record.members = members(channel);
        }
        out(record);
        if (data && typeof data.event_seq === 'number') {
          client.lastSeq[cmd.channel] = Math.max(client.lastSeq[cmd.channel] || 0, data.event_seq);
        }
        if (event === 'pusher:subscription_succeeded' && client.resume[cmd.channel] === 'subscribed') {
          sendResume(id, cmd.channel);
        }
      });
      break;
    }
    case 'unsubscribe':
      client.pusher.unsubscribe(cmd.channel);
      out({ id, type: 'unsubscribed', channel: cmd.channel });
      break;
    case 'trigger': {
      const ok = client.pusher.channel(cmd.channel).trigger(cmd.event, cmd.data);
      out({ id, type: 'triggered', channel: cmd.channel, event: cmd.event, ok });
      break;
    }
    case 'send':
      client.pusher.send_event(cmd.event, cmd.data, cmd.channel);
      break;
    case 'members':
      out({ id, type: 'members', channel: cmd.channel,
            ...members(client.pusher.channel(cmd.channel)) });
      break;
    case 'signin':
      client.pusher.signin();
      client.pusher.user.signinDonePromise.then(() =>
        out({ id, type: 'signed_in', user_data: client.pusher.user.user_data }));
      break;
    case 'echo': {
      // As a Laravel app configures Echo: authEndpoint and auth.params.
      const options = {
        broadcaster: 'pusher',
        Pusher,
        key: cmd.key,
        ...pusherOptions(cmd),
        authEndpoint: cmd.authEndpoint,
        auth: { headers: cmd.headers || {}, params: cmd.params || {} },
      };
      delete options.channelAuthorization;
      delete options.userAuthentication;
      const echo = new Echo(options);
      clients[id] = { echo, pusher: echo.connector.pusher, lastSeq: {}, resume: {} };
      watchConnection(id, echo.connector.pusher);
      break;
    }
    case 'echo_private':
      client.echo.private(cmd.channel)
        .subscribed(() => out({ id, type: 'echo_subscribed', channel: cmd.channel }))
        .error((e) => out({ id, type: 'echo_error', channel: cmd.channel, error: e }))
        .listen(cmd.listen, (data) =>
          out({ id, type: 'echo_event', channel: cmd.channel, event: cmd.listen, data }));
      break;
    case 'echo_whisper':
      client.echo.private(cmd.channel).whisper(cmd.event, cmd.data);
      out({ id, type: 'whispered', channel: cmd.channel, event: cmd.event });
      break;
    case 'echo_listen_whisper':
      client.echo.private(cmd.channel).listenForWhisper(cmd.event, (data) =>
        out({ id, type: 'whisper', channel: cmd.channel, event: cmd.event, data }));
      break;
    case 'echo_join':
      client.echo.join(cmd.channel)
        .here((users) => out({ id, type: 'here', channel: cmd.channel, users }))
        .joining((user) => out({ id, type: 'joining', channel: cmd.channel, user }))
        .leaving((user) => out({ id, type: 'leaving', channel: cmd.channel, user }));
      break;
    case 'resume': {
      client.resume[cmd.channel] = cmd.when || 'connected';
      out({ id, type: 'resume_armed', channel: cmd.channel });
      break;
    }
    case 'disconnect':
      if (client.echo) client.echo.disconnect(); else client.pusher.disconnect();
      out({ id, type: 'disconnected' });
      break;
    case 'exit':
      process.exit(0);
      break;
    default:
      out({ id, type: 'driver_error', error: `unknown command ${cmd.cmd}` });
  }
}

// laravel-echo ships as an ES module: load it before taking commands.
import('laravel-echo').then((mod) => {
  Echo = mod.default;
  readline.createInterface({ input: process.stdin }).on('line', (line) => {
    if (!line.trim()) return;
    try {
      handle(JSON.parse(line));
    } catch (e) {
      out({ type: 'driver_error', error: String(e && e.stack ? e.stack : e), line });
    }
  });
  process.stdin.on('end', () => process.exit(0));
  out({ type: 'ready' });
});
