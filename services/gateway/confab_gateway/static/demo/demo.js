// The demo page: create a room, share its link, chat through the Confab widget.
//
// A room link is /demo#room=<room token> (a fragment: it never reaches a server log).
// Each tab that opens it exchanges the token for a guest session of its own, kept in
// sessionStorage, which is per tab: a reload stays the same guest, a second tab is a
// second guest.

import { mount } from '/widget/v1/widget.js';

const STORE = 'confab-demo-room:';
const $ = (id) => document.getElementById(id);
let chat = null;
let current = null;

function roomInHash() {
  const match = /(?:^#|&)room=([^&]+)/.exec(location.hash);
  return match ? decodeURIComponent(match[1]) : null;
}

function remembered(token) {
  try {
    const room = JSON.parse(sessionStorage.getItem(STORE + token) || 'null');
    return room && new Date(room.guest.expires_at) > new Date() ? room : null;
  } catch {
    return null;
  }
}

function remember(room) {
  try {
    sessionStorage.setItem(STORE + room.room_token, JSON.stringify(room));
  } catch {
    // Storage is off: a reload makes a new guest, which is fine for a demo.
  }
}

async function post(path) {
  let response;
  try {
    response = await fetch(path, { method: 'POST', cache: 'no-store' });
  } catch {
    throw new Error('The network is unreachable.');
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error((body && body.error && body.error.message) || `Error ${response.status}.`);
  }
  return body;
}

function say(text) {
  $('demo-status').textContent = text;
}

function show(room) {
  current = room.room_token;
  const link = new URL(room.link, location.href).href;
  $('start').hidden = true;
  $('share').hidden = false;
  $('room-link').href = link;
  $('room-link').textContent = link;
  $('you').textContent = `You are ${room.guest.name}.`;
  if (chat) chat.destroy();
  $('placeholder').hidden = true;
  chat = mount({
    token: room.guest.token,
    container: $('chat'),
    conversationId: room.conversation_id,
    title: 'Demo room',
  });
}

async function create() {
  const button = $('create-room');
  button.disabled = true;
  say('');
  try {
    const room = await post('/demo/api/rooms');
    remember(room);
    history.replaceState(null, '', room.link);
    show(room);
  } catch (error) {
    say(`The room could not be created: ${error.message}`);
  } finally {
    button.disabled = false;
  }
}

async function enter(token) {
  if (token === current) return;
  say('Joining the room…');
  try {
    let room = remembered(token);
    if (!room) {
      room = await post(`/demo/api/rooms/${encodeURIComponent(token)}/guests`);
      remember(room);
    }
    say('');
    show(room);
  } catch (error) {
    say(`You could not join this room: ${error.message}`);
  }
}

async function copyLink() {
  const link = $('room-link').href;
  try {
    await navigator.clipboard.writeText(link);
    say('Link copied.');
  } catch {
    const range = document.createRange();
    range.selectNodeContents($('room-link'));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    say('Press Ctrl+C (or ⌘C) to copy the selected link.');
  }
}

$('create-room').addEventListener('click', create);
$('new-room').addEventListener('click', create);
$('copy-link').addEventListener('click', copyLink);
window.addEventListener('hashchange', () => {
  const token = roomInHash();
  if (token) enter(token);
});

const token = roomInHash();
if (token) enter(token);
