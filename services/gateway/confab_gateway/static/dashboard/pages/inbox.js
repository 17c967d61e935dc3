// The inbox: support conversations by view (unassigned, mine, all, snoozed, closed) with
// counts kept live by the workspace's inbox channel; a conversation with the visitor's
// details and metadata, the thread and internal notes, reply or note, assign, snooze,
// close or reopen, tags, typing and read receipts both ways. Keyboard: j / k next and
// previous conversation, r reply, n note, e close or reopen, ? the shortcuts.

import { announce, avatar, empty, failed, h, loading, replace, when } from '../dom.js';
import { connect, conversationChannel, inboxChannel } from '../live.js';

const VIEWS = [
  ['unassigned', 'Unassigned'],
  ['mine', 'Mine'],
  ['all', 'All open'],
  ['snoozed', 'Snoozed'],
  ['closed', 'Closed'],
];
const TYPING_MS = 4000;

export async function render(main, { api, me, can }) {
  const state = {
    view: sessionStorage.getItem('confab.inbox.view') || 'unassigned',
    list: [],
    counts: null,
    open: null, // the open conversation's id
    support: null,
    messages: [],
    earlier: false, // older messages than those loaded exist
    notes: [],
    team: [],
    visitor: null,
    typing: new Map(),
    lastRead: new Map(),
    seen: 0, // the highest seq of the inbox frames: the list is read at least that far
    usersSeen: 0, // the same for the profile frames (identity's log): names at least that new
  };
  const reply = can('conversations.reply');
  const views = h('nav', { class: 'inbox-views', 'aria-label': 'Inbox views' });
  const listBox = h('section', { class: 'inbox-list', 'aria-label': 'Conversations' });
  const pane = h('section', { class: 'inbox-pane', 'aria-label': 'Conversation' });
  const status = h('p', { class: 'live-state muted', role: 'status' });
  const presence = reply ? availability() : null;
  replace(main, h('div', { class: 'page-head' }, h('h1', {}, 'Inbox'), h('div', { class: 'actions' }, presence, status)), h('div', { class: 'inbox', 'data-open': 'false' }, views, listBox, pane));
  main.classList.add('wide');
  const layout = main.querySelector('.inbox');

  // Online or away: round-robin assigns among agents online, and the widget says "typically
  // replies in …" while one is.
  function availability() {
    const group = h('div', { class: 'segmented', role: 'group', 'aria-label': 'Your availability' });
    const show = (current) =>
      replace(
        group,
        [['online', 'Online'], ['away', 'Away']].map(([value, label]) =>
          h('button', { type: 'button', class: 'segment', 'aria-pressed': String(current === value), 'data-testid': `presence-${value}`, onclick: () => set(value) }, label),
        ),
      );
    const set = async (value) => {
      try {
        const setup = await api.call('PUT', `/api/v1/support/agents/${me.member.user_id}/availability`, { status: value });
        const mine = (setup.agents || []).find((a) => a.user_id === me.member.user_id);
        show(mine ? mine.status : value);
        announce(value === 'online' ? 'You are online.' : 'You are away.');
      } catch (error) {
        announce(error.message);
      }
    };
    show(null);
    if (can('settings.manage')) {
      api.get('/api/v1/support/settings').then(
        (setup) => show(((setup.agents || []).find((a) => a.user_id === me.member.user_id) || { status: 'away' }).status),
        () => {},
      );
    }
    return group;
  }

  // -- live --------------------------------------------------------------------------------
  let socket = null;
  let refresh = null;
  const scheduleRefresh = () => {
    clearTimeout(refresh);
    refresh = setTimeout(() => loadList(false), 150);
  };
  try {
    socket = await connect(api, me, {
      state: (s) => {
        status.textContent = s === 'connected' ? 'Live' : s === 'connecting' ? 'Connecting…' : 'Offline — reconnecting';
        status.dataset.state = s;
      },
      event: (channel, name, data) => onEvent(channel, name, data),
      // The list may have been read before the inbox channel was joined: a change in
      // between came on no frame, so joining (the first time too) reads it again.
      subscribed: (channel, again) => {
        if (channel === inboxChannel(me.workspace_id)) scheduleRefresh();
        else if (again) openConversation(state.open, false);
      },
      refused: () => api.get('/dashboard/api/me').then(() => location.reload(), () => {}),
    });
    socket.subscribe(inboxChannel(me.workspace_id));
  } catch (error) {
    status.textContent = `Not live: ${error.message}`;
  }

  function onEvent(channel, name, data) {
    if (channel === inboxChannel(me.workspace_id)) {
      if (name === 'inbox.note' && data.conversation_id === state.open) {
        if (!state.notes.some((n) => n.id === data.id)) state.notes.push(data);
        drawThread();
      }
      if (name === 'inbox.conversation') {
        state.seen = Math.max(state.seen, data.seq || 0);
        scheduleRefresh();
        if (data.conversation_id === state.open && data.change !== 'message') refreshHeader();
      }
      if (name === 'inbox.profile') {
        // Someone's name changed (or they were erased): re-read what shows it.
        state.usersSeen = Math.max(state.usersSeen, data.seq || 0);
        const named = (c) => c.visitor_id === data.user_id || c.conversation.participants.some((p) => p.id === data.user_id);
        if (state.list.some(named)) scheduleRefresh();
        if (state.support && named(state.support)) refreshVisitor();
      }
      return;
    }
    if (channel !== conversationChannel(state.open || '')) return;
    if (name === 'message.created') {
      if (!state.messages.some((m) => m.id === data.id)) state.messages.push(data);
      if (data.sender) state.typing.delete(data.sender.id);
      drawThread();
      markRead();
    } else if (name === 'message.updated' || name === 'message.deleted') {
      state.messages = state.messages.map((m) => (m.id === data.id ? { ...m, ...data } : m));
      drawThread();
    } else if (name === 'message.read') {
      state.lastRead.set(data.user_id, data.seq);
      drawThread();
    } else if (name === 'user.typing' && data.user_id !== me.member.user_id) {
      if (data.is_typing) state.typing.set(data.user_id, Date.now());
      else state.typing.delete(data.user_id);
      drawTyping();
      setTimeout(drawTyping, TYPING_MS + 50);
    }
  }

  // -- the views and the list ---------------------------------------------------------------
  function drawViews() {
    replace(
      views,
      h(
        'ul',
        {},
        VIEWS.map(([view, label]) =>
          h(
            'li',
            {},
            h(
              'a',
              {
                href: '#/inbox',
                'aria-current': view === state.view ? 'true' : null,
                'data-testid': `view-${view}`,
                onclick: (event) => {
                  event.preventDefault();
                  state.view = view;
                  sessionStorage.setItem('confab.inbox.view', view);
                  loadList(true);
                },
              },
              h('span', {}, label),
              h('span', { class: 'count', 'data-testid': `count-${view}` }, state.counts ? String(state.counts[view]) : '·'),
            ),
          ),
        ),
      ),
    );
  }

  async function loadList(showLoading, more = false) {
    drawViews();
    if (showLoading) replace(listBox, loading('conversations'));
    try {
      // A refresh re-reads as many as are shown; "Show more" pages on from the last.
      const page = await api.get('/api/v1/support/conversations', {
        view: state.view,
        assignee_id: me.member.user_id, // what "mine" counts, whatever the view
        cursor: more ? state.cursor : undefined,
        limit: more || showLoading ? 50 : Math.min(100, Math.max(50, state.list.length)),
        // A frame can come before the inbox has applied its change: read at least that far.
        min_seq: state.seen || undefined,
        users_min_seq: state.usersSeen || undefined,
      });
      state.list = more ? state.list.concat(page.data) : page.data;
      state.cursor = page.next_cursor;
      state.counts = page.counts;
      drawViews();
      drawList();
    } catch (error) {
      replace(listBox, failed(error, () => loadList(true)));
    }
  }

  function title(c) {
    const visitor = c.conversation.participants.find((p) => p.id === c.visitor_id);
    return (visitor && visitor.name) || c.conversation.title || 'Visitor';
  }

  function drawList() {
    if (!state.list.length) {
      const hints = {
        unassigned: ['No unassigned conversations', 'New conversations from the widget land here.'],
        mine: ['Nothing assigned to you', 'Conversations you take appear here.'],
        all: ['No open conversations', 'All caught up.'],
        snoozed: ['Nothing snoozed', 'Snoozed conversations come back on their own.'],
        closed: ['No closed conversations yet', ''],
      }[state.view];
      replace(listBox, empty(...hints));
      return;
    }
    replace(
      listBox,
      h(
        'ul',
        { class: 'conv-list' },
        state.list.map((c) => {
          const last = c.conversation.last_message;
          const assignee = state.team.find((m) => m.user_id === c.assignee_id);
          return h(
            'li',
            {},
            h(
              'a',
              {
                href: `#/inbox/${c.id}`,
                class: 'conv-item',
                'aria-current': c.id === state.open ? 'true' : null,
                'data-testid': 'inbox-item',
                dataset: { id: c.id },
              },
              avatar(title(c)),
              h(
                'span',
                { class: 'conv-text' },
                h('span', { class: 'conv-top' }, h('strong', {}, title(c)), when(c.last_activity_at)),
                h('span', { class: 'preview' }, last ? `${last.sender && last.sender.id !== c.visitor_id ? 'You/team: ' : ''}${last.content}` : 'No messages yet'),
                h('span', { class: 'conv-meta' }, assignee ? `Assigned to ${assignee.name}` : 'Unassigned', c.tags.map((t) => h('span', { class: 'badge' }, t))),
              ),
            ),
          );
        }),
      ),
      state.cursor ? h('button', { type: 'button', class: 'button more', onclick: () => loadList(false, true) }, 'Show more') : null,
    );
  }

  // -- one conversation --------------------------------------------------------------------
  async function openConversation(id, focus = true) {
    if (!id) {
      layout.dataset.open = 'false';
      replace(pane, empty('Pick a conversation', 'Or press j to open the first one.'));
      return;
    }
    if (state.open && state.open !== id && socket) socket.unsubscribe(conversationChannel(state.open));
    state.open = id;
    layout.dataset.open = 'true';
    for (const a of listBox.querySelectorAll('.conv-item')) {
      if (a.dataset.id === id) a.setAttribute('aria-current', 'true');
      else a.removeAttribute('aria-current');
    }
    replace(pane, loading('the conversation'));
    try {
      const [support, history, notes] = await Promise.all([
        api.get(`/api/v1/support/conversations/${id}`),
        api.get(`/api/v1/conversations/${id}/messages`, { limit: 100 }),
        api.get(`/api/v1/support/conversations/${id}/notes`, { limit: 100 }),
      ]);
      state.support = support;
      state.messages = history.data;
      state.earlier = history.has_more;
      state.notes = notes.data;
      state.lastRead = new Map(support.conversation.participants.map((p) => [p.id, p.last_read_seq]));
      state.visitor = support.visitor_id ? await api.get(`/api/v1/users/${support.visitor_id}`).catch(() => null) : null;
    } catch (error) {
      replace(pane, failed(error, () => openConversation(id)));
      return;
    }
    if (socket) socket.subscribe(conversationChannel(id));
    drawPane();
    markRead();
    if (focus) pane.querySelector('h2').focus();
  }

  async function refreshVisitor() {
    const id = state.support && state.support.visitor_id;
    if (id) state.visitor = await api.get(`/api/v1/users/${id}`).catch(() => state.visitor);
    await refreshHeader();
  }

  async function refreshHeader() {
    try {
      state.support = await api.get(`/api/v1/support/conversations/${state.open}`);
      drawHeader();
      drawDetails();
    } catch {
      /* the list refresh shows the state anyway */
    }
  }

  const header = h('div', { class: 'conv-head' });
  const thread = h('ol', { class: 'thread', tabindex: '0', 'aria-label': 'Messages and notes', 'aria-live': 'polite', 'data-testid': 'thread' });
  const typingLine = h('p', { class: 'typing muted', 'aria-live': 'polite', 'data-testid': 'typing' });
  const earlier = h('button', { type: 'button', class: 'button earlier', 'data-testid': 'earlier', onclick: () => loadEarlier() }, 'Show earlier messages');

  // A page of older messages before the oldest shown; the view stays where the reader is.
  async function loadEarlier() {
    const id = state.open;
    const oldest = state.messages.reduce((low, m) => Math.min(low, m.seq), Infinity);
    earlier.disabled = true;
    earlier.textContent = 'Loading earlier messages…';
    try {
      const page = await api.get(`/api/v1/conversations/${id}/messages`, { limit: 100, before: oldest });
      if (state.open !== id) return;
      const known = new Set(state.messages.map((m) => m.id));
      state.messages = [...page.data.filter((m) => !known.has(m.id)), ...state.messages].sort((a, b) => a.seq - b.seq);
      state.earlier = page.has_more;
      const height = thread.scrollHeight;
      drawThread();
      thread.scrollTop = thread.scrollHeight - height;
      announce(`${page.data.length} earlier messages shown.`);
      if (!state.earlier) thread.focus();
    } catch (error) {
      announce(error.message);
    } finally {
      earlier.disabled = false;
      earlier.textContent = 'Show earlier messages';
      earlier.hidden = !state.earlier;
    }
  }
  const details = h('aside', { class: 'conv-details', 'aria-label': 'Visitor details' });

  function drawPane() {
    earlier.hidden = !state.earlier;
    drawHeader();
    drawThread();
    drawTyping();
    drawDetails();
    replace(pane, h('button', { type: 'button', class: 'button quiet-dark back', onclick: () => { location.hash = '#/inbox'; } }, '← Conversations'), header, h('div', { class: 'conv-body' }, h('div', { class: 'conv-main' }, earlier, thread, typingLine, reply ? composer() : null), details));
  }

  function drawHeader() {
    const s = state.support;
    const controls = [];
    if (reply) {
      const assign = h(
        'select',
        { id: 'assignee', onchange: (e) => act('assign', { assignee_id: e.currentTarget.value || null }, 'Assigned.') },
        h('option', { value: '' }, 'Unassigned'),
        state.team.map((m) => h('option', { value: m.user_id, selected: m.user_id === s.assignee_id }, m.user_id === me.member.user_id ? `${m.name} (you)` : m.name)),
      );
      controls.push(h('label', { class: 'inline-label', for: 'assignee' }, 'Assignee'), assign);
      if (s.status === 'closed') controls.push(h('button', { type: 'button', class: 'button', 'data-testid': 'reopen', onclick: () => act('status', { status: 'open' }, 'Reopened.') }, 'Reopen'));
      else {
        controls.push(
          h('button', {
            type: 'button',
            class: 'button',
            onclick: () => act('status', { status: 'snoozed', snoozed_until: new Date(Date.now() + 4 * 3600_000).toISOString() }, 'Snoozed for 4 hours.'),
          }, 'Snooze 4h'),
          h('button', { type: 'button', class: 'button primary', 'data-testid': 'close', onclick: () => act('status', { status: 'closed' }, 'Closed.') }, 'Close'),
        );
      }
    }
    replace(
      header,
      h('div', {}, h('h2', { tabindex: '-1' }, title(s)), h('p', { class: 'muted' }, h('span', { class: `badge ${s.status}` }, s.status), s.snoozed_until && s.status === 'snoozed' ? ['until ', when(s.snoozed_until)] : null, ' · started ', when(s.created_at))),
      h('div', { class: 'actions' }, controls, h('a', { href: `#/conversations/${state.open}`, 'data-testid': 'open-tools' }, 'Threads, pins and moderation')),
      tagEditor(),
    );
  }

  function tagEditor() {
    const s = state.support;
    const input = h('input', { id: 'new-tag', placeholder: 'Add a tag', maxlength: '50', size: '12' });
    return h(
      'form',
      {
        class: 'tags',
        onsubmit: (e) => {
          e.preventDefault();
          const tag = input.value.trim();
          if (tag && !s.tags.includes(tag)) act('tags', { tags: [...s.tags, tag] }, `Tagged ${tag}.`);
        },
      },
      h('span', { class: 'visually-hidden' }, 'Tags'),
      s.tags.map((t) =>
        h('span', { class: 'tag' }, t, reply ? h('button', { type: 'button', class: 'tag-x', 'aria-label': `Remove tag ${t}`, onclick: () => act('tags', { tags: s.tags.filter((x) => x !== t) }, `Removed ${t}.`) }, '×') : null),
      ),
      reply ? [h('label', { for: 'new-tag', class: 'visually-hidden' }, 'Add a tag'), input] : null,
    );
  }

  async function act(what, body, done) {
    try {
      const method = what === 'tags' ? 'PUT' : 'POST';
      state.support = await api.call(method, `/api/v1/support/conversations/${state.open}/${what}`, body);
      drawHeader();
      drawDetails();
      announce(done);
      scheduleRefresh();
    } catch (error) {
      announce(error.message);
      replace(header.querySelector('.actions') || header, h('p', { class: 'form-error', role: 'alert' }, error.message));
    }
  }

  function seenBy(message) {
    const names = [];
    for (const p of state.support.conversation.participants) {
      if (p.id === (message.sender && message.sender.id)) continue;
      if ((state.lastRead.get(p.id) || 0) >= message.seq) names.push(p.id === state.support.visitor_id ? title(state.support) : p.name);
    }
    return names;
  }

  function drawThread() {
    if (!state.support) return;
    const items = [
      ...state.messages.map((m) => ({ at: m.created_at, kind: 'message', item: m })),
      ...state.notes.map((n) => ({ at: n.created_at, kind: 'note', item: n })),
    ].sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0));
    const mine = (m) => m.sender && m.sender.id !== state.support.visitor_id;
    const lastOurs = [...state.messages].reverse().find(mine);
    replace(
      thread,
      items.length
        ? items.map(({ kind, item }) => {
            if (kind === 'note') {
              const author = state.team.find((m) => m.user_id === item.author_id);
              return h('li', { class: 'bubble note', 'data-testid': 'note' }, h('p', { class: 'meta' }, h('strong', {}, author ? author.name : 'Team'), ' · internal note · ', when(item.created_at)), h('p', { class: 'text' }, item.content));
            }
            const names = item === lastOurs ? seenBy(item) : [];
            return h(
              'li',
              { class: mine(item) ? 'bubble ours' : 'bubble theirs', 'data-testid': 'message' },
              h('p', { class: 'meta' }, h('strong', {}, item.sender ? item.sender.name : 'System'), ' · ', when(item.created_at), item.hidden ? h('span', { class: 'badge hidden' }, 'hidden') : null),
              item.content || item.deleted ? h('p', { class: 'text' }, item.deleted ? 'This message was deleted.' : item.content) : null,
              item.deleted ? null : files(item.attachments || []),
              names.length ? h('p', { class: 'seen muted', 'data-testid': 'seen' }, `Seen by ${names.join(', ')}`) : null,
            );
          })
        : h('li', { class: 'muted' }, 'No messages yet.'),
    );
    thread.scrollTop = thread.scrollHeight;
  }

  function files(list) {
    if (!list.length) return null;
    return h(
      'ul',
      { class: 'files' },
      list.map((a) =>
        h(
          'li',
          {},
          a.url && a.content_type.startsWith('image/') && a.thumbnail_url
            ? h('a', { href: a.url, target: '_blank', rel: 'noopener' }, h('img', { src: a.thumbnail_url, alt: a.filename, width: 120 }))
            : h('a', { href: a.url || '#', target: '_blank', rel: 'noopener', 'data-testid': 'file' }, `📎 ${a.filename}`),
        ),
      ),
    );
  }

  function drawTyping() {
    const now = Date.now();
    const names = [];
    for (const [id, at] of state.typing) {
      if (now - at > TYPING_MS) state.typing.delete(id);
      else names.push(id === (state.support && state.support.visitor_id) ? title(state.support) : (state.team.find((m) => m.user_id === id) || {}).name || 'Someone');
    }
    typingLine.textContent = names.length ? `${names.join(', ')} is typing…` : '';
  }

  function drawDetails() {
    const v = state.visitor;
    const s = state.support;
    const meta = Object.entries((v && v.metadata) || {});
    const convMeta = Object.entries(s.conversation.metadata || {});
    replace(
      details,
      h('h3', {}, 'Visitor'),
      v
        ? h(
            'dl',
            { class: 'facts small' },
            h('dt', {}, 'Name'), h('dd', {}, v.name),
            h('dt', {}, 'Email'), h('dd', {}, v.email || '—'),
            h('dt', {}, 'Since'), h('dd', {}, when(v.created_at)),
            meta.map(([k, val]) => [h('dt', {}, k), h('dd', {}, typeof val === 'string' ? val : JSON.stringify(val))]),
          )
        : h('p', { class: 'muted' }, 'Unknown visitor.'),
      v ? h('p', {}, h('a', { href: `#/users/${v.id}` }, 'Open profile')) : null,
      h('h3', {}, 'Conversation'),
      h(
        'dl',
        { class: 'facts small' },
        h('dt', {}, 'First response'), h('dd', {}, s.first_response_at ? when(s.first_response_at) : '—'),
        h('dt', {}, 'Resolved'), h('dd', {}, s.resolved_at ? when(s.resolved_at) : '—'),
        convMeta.map(([k, val]) => [h('dt', {}, k), h('dd', {}, typeof val === 'string' ? val : JSON.stringify(val))]),
      ),
    );
  }

  let mode = 'reply';
  let typingSent = 0;
  function composer() {
    const box = h('textarea', { id: 'composer', rows: '3', 'data-testid': 'reply-box', placeholder: 'Write a reply… (Enter to send, Shift+Enter for a new line)' });
    const tabs = h(
      'div',
      { class: 'segmented', role: 'group', 'aria-label': 'Write a' },
      [['reply', 'Reply'], ['note', 'Note']].map(([value, label]) =>
        h('button', {
          type: 'button',
          class: 'segment',
          'aria-pressed': String(mode === value),
          'data-testid': `mode-${value}`,
          onclick: () => {
            mode = value;
            for (const b of tabs.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.testid === `mode-${mode}`));
            form.classList.toggle('as-note', mode === 'note');
            box.placeholder = mode === 'note' ? 'Write an internal note (only your team sees it)…' : 'Write a reply… (Enter to send, Shift+Enter for a new line)';
            box.focus();
          },
        }, label),
      ),
    );
    const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const send = h('button', { type: 'submit', class: 'button primary', 'data-testid': 'send' }, 'Send');
    let pending = []; // uploaded, not yet sent: {id, filename}
    const chips = h('ul', { class: 'files pending', 'aria-label': 'Files to send' });
    const drawChips = () =>
      replace(
        chips,
        pending.map((a) =>
          h('li', { class: 'tag' }, a.filename, h('button', { type: 'button', class: 'tag-x', 'aria-label': `Remove ${a.filename}`, onclick: () => { pending = pending.filter((p) => p !== a); drawChips(); } }, '×')),
        ),
      );
    const picker = h('input', {
      id: 'attach',
      type: 'file',
      multiple: true,
      class: 'visually-hidden',
      'data-testid': 'attach',
      onchange: async () => {
        for (const file of picker.files) {
          error.hidden = true;
          try {
            const body = new FormData();
            body.append('file', file);
            const response = await fetch(`/dashboard/api/conversations/${state.open}/attachments`, {
              method: 'POST',
              body,
              credentials: 'same-origin',
              headers: { 'X-CSRF-Token': api.csrf },
            });
            const data = await response.json().catch(() => null);
            if (!response.ok) throw new Error((data && data.error && data.error.message) || `The upload failed (HTTP ${response.status}).`);
            pending.push(data);
            drawChips();
            announce(`${file.name} is attached.`);
          } catch (failure) {
            error.hidden = false;
            error.textContent = failure.message;
          }
        }
        picker.value = '';
      },
    });
    const attach = h('label', { for: 'attach', class: 'button attach-button' }, 'Attach files');
    const form = h(
      'form',
      {
        class: 'composer',
        onsubmit: async (e) => {
          e.preventDefault();
          const text = box.value.trim();
          if (!text && !(mode === 'reply' && pending.length)) return;
          send.disabled = true;
          error.hidden = true;
          try {
            if (mode === 'note') {
              const note = await api.post(`/api/v1/support/conversations/${state.open}/notes`, { content: text });
              if (!state.notes.some((n) => n.id === note.id)) state.notes.push(note);
            } else {
              const message = await api.post(`/api/v1/support/conversations/${state.open}/replies`, {
                content: text,
                attachment_ids: pending.map((a) => a.id),
                client_msg_id: crypto.randomUUID(),
              });
              pending = [];
              drawChips();
              if (!state.messages.some((m) => m.id === message.id)) state.messages.push(message);
              typingSent = 0;
              await refreshHeader(); // the agent is a participant now: read receipts count
              markRead();
            }
            box.value = '';
            drawThread();
          } catch (failure) {
            error.hidden = false;
            error.textContent = failure.message;
          } finally {
            send.disabled = false;
            box.focus();
          }
        },
      },
      h('label', { for: 'composer', class: 'visually-hidden' }, 'Message'),
      tabs,
      box,
      chips,
      h('div', { class: 'composer-foot' }, mode === 'reply' ? [picker, attach] : null, error, send),
    );
    box.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    box.addEventListener('input', () => {
      if (mode !== 'reply' || Date.now() - typingSent < 2500) return;
      typingSent = Date.now();
      api.post(`/dashboard/api/conversations/${state.open}/typing`, { is_typing: true }).catch(() => {});
    });
    return form;
  }

  function markRead() {
    const s = state.support;
    if (!s || !reply || document.hidden) return;
    const member = s.conversation.participants.some((p) => p.id === me.member.user_id);
    const last = state.messages.length ? state.messages[state.messages.length - 1].seq : 0;
    if (!member || !last || (state.lastRead.get(me.member.user_id) || 0) >= last) return;
    state.lastRead.set(me.member.user_id, last);
    api.post(`/dashboard/api/conversations/${state.open}/read`, { seq: last }).catch(() => {});
  }

  // -- keyboard ------------------------------------------------------------------------------
  function step(by) {
    if (!state.list.length) return;
    const index = state.list.findIndex((c) => c.id === state.open);
    const next = state.list[Math.max(0, Math.min(state.list.length - 1, index < 0 ? 0 : index + by))];
    location.hash = `#/inbox/${next.id}`;
  }
  const shortcuts = (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    const tag = (e.target && e.target.tagName) || '';
    if (['INPUT', 'TEXTAREA', 'SELECT'].includes(tag) || document.querySelector('dialog[open]')) return;
    const box = document.getElementById('composer');
    if (e.key === 'j') step(1);
    else if (e.key === 'k') step(-1);
    else if (e.key === 'r' && box) pane.querySelector('[data-testid=mode-reply]').click();
    else if (e.key === 'n' && box) pane.querySelector('[data-testid=mode-note]').click();
    else if (e.key === 'e' && state.support) (pane.querySelector('[data-testid=close]') || pane.querySelector('[data-testid=reopen]'))?.click();
    else if (e.key === '?') announce('Shortcuts: j next, k previous, r reply, n note, e close or reopen.');
    else return;
    e.preventDefault();
  };
  document.addEventListener('keydown', shortcuts);
  const onVisible = () => markRead();
  document.addEventListener('visibilitychange', onVisible);

  const onHash = () => {
    const id = location.hash.startsWith('#/inbox/') ? location.hash.slice('#/inbox/'.length) : null;
    if (id !== state.open || !id) openConversation(id);
  };
  window.addEventListener('hashchange', onHash);

  try {
    state.team = (await api.get('/dashboard/api/staff')).data;
  } catch {
    state.team = [];
  }
  await loadList(true);
  const first = location.hash.startsWith('#/inbox/') ? location.hash.slice('#/inbox/'.length) : null;
  openConversation(first, false);

  return () => {
    document.removeEventListener('keydown', shortcuts);
    document.removeEventListener('visibilitychange', onVisible);
    window.removeEventListener('hashchange', onHash);
    main.classList.remove('wide');
    if (socket) socket.pusher.disconnect();
  };
}
