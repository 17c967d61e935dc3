// Conversations: every conversation of the workspace (not only support ones), a search over
// their messages, and one conversation with the tools of issue 23 — freeze or thaw it,
// mute or ban a participant here (for a while or until lifted), the pinned messages with
// pin and unpin, a thread view (a message's replies, paged, and replying in the thread),
// and @-mentions of participants in both composers.
//
// - Routes: #/conversations (list and search), #/conversations/<id> (one), with
//   ?at=<seq>&m=<message id>[&thread=<parent id>] to open a search hit in context.
// - Mentions: the widget's MentionPicker and mentionParts (/widget/v1/mentions.js, one
//   definition): the picked mentions go to the API as {user_id, start, end} in code
//   points; a message's mentions are drawn from its entities, each part a text node.
// - Staff post as themselves (POST /api/v1/conversations/{id}/messages), which the
//   platform allows only to a participant: a member who is not one joins first, by a
//   button that says so.
// - Live: the conversation's channel; any change there re-reads what is shown (the
//   messages, the pins, the open thread, the conversation), debounced.
// - Who sees what: `conversations.read` the view; `conversations.reply` the composers;
//   `moderation` freeze and pins; `users.ban` mute and ban. A refusal is shown as the API
//   words it.

import { announce, avatar, empty, failed, h, loading, replace, when } from '../dom.js';
import { connect, conversationChannel } from '../live.js';
import { MentionPicker, mentionParts } from '/widget/v1/mentions.js';
import { markedSnippet } from '/widget/v1/search.js';

const PAGE = 50;
const THREAD_PAGE = 20;
const MAX_BACK = 10; // pages read back to reach a search hit
const DURATIONS = [
  ['3600', '1 hour'],
  ['86400', '24 hours'],
  ['604800', '7 days'],
  ['2592000', '30 days'],
  ['', 'Until lifted'],
];
const WORDS = {
  'mention.label': 'People to mention',
  'mention.count': ({ count }) => (count === 1 ? '1 person to mention' : `${count} people to mention`),
};
const t = (key, params) => {
  const word = WORDS[key];
  return typeof word === 'function' ? word(params || {}) : word || key;
};

export async function render(main, context) {
  let stop = null;
  const show = async () => {
    if (stop) stop();
    stop = null;
    const rest = location.hash.replace(/^#\/conversations\/?/, '');
    const [id, query] = rest.split('?');
    stop = id ? await conversation(main, context, id, new URLSearchParams(query || '')) : await list(main, context);
  };
  const onHash = () => {
    if (location.hash.startsWith('#/conversations')) show();
  };
  window.addEventListener('hashchange', onHash);
  await show();
  return () => {
    window.removeEventListener('hashchange', onHash);
    if (stop) stop();
  };
}

function title(c) {
  return c.title || c.participants.map((p) => p.name).join(', ') || 'Conversation';
}

// -- the list, and search ---------------------------------------------------------------------

async function list(main, { api }) {
  const results = h('div', { 'aria-live': 'polite' });
  const input = h('input', { id: 'search-messages', type: 'search', placeholder: 'Words from a message', maxlength: '200', autocomplete: 'off' });
  const form = h(
    'form',
    {
      class: 'search',
      role: 'search',
      onsubmit: (e) => {
        e.preventDefault();
        search(input.value.trim());
      },
    },
    h('label', { for: 'search-messages', class: 'visually-hidden' }, 'Search messages'),
    input,
    h('button', { type: 'submit', class: 'button primary' }, 'Search'),
  );
  const conversations = h('div', {});
  replace(main, h('div', { class: 'page-head' }, h('h1', {}, 'Conversations')), form, results, h('h2', {}, 'Recent conversations'), conversations);
  document.title = 'Conversations · Confab';

  let cursor = null;
  let shown = [];
  const titles = new Map(); // of the recent conversations: named in a hit when known
  async function search(q, more = false) {
    if (!q) {
      replace(results);
      return;
    }
    if (!more) replace(results, loading('results'));
    try {
      const page = await api.get('/api/v1/search', { q, cursor: more ? cursor : undefined, limit: 20 });
      cursor = page.next_cursor;
      shown = more ? shown.concat(page.data) : page.data;
      replace(
        results,
        h('h2', {}, shown.length ? `Messages matching “${q}”` : `No message matches “${q}”`),
        shown.length
          ? h(
              'ul',
              { class: 'rows hits', 'data-testid': 'search-results' },
              shown.map((hit) => {
                const m = hit.message;
                const params = new URLSearchParams({ at: String(m.seq), m: m.id });
                if (m.parent_id) params.set('thread', m.parent_id);
                return h(
                  'li',
                  { class: 'row hit' },
                  h(
                    'a',
                    { href: `#/conversations/${m.conversation_id}?${params}`, 'data-testid': 'search-hit' },
                    h('span', { class: 'hit-who' }, h('strong', {}, m.sender ? m.sender.name : 'System'), titles.has(m.conversation_id) ? ` in ${titles.get(m.conversation_id)}` : '', ' ', when(m.created_at), m.parent_id ? h('span', { class: 'badge' }, 'in a thread') : null),
                    h('span', { class: 'hit-text' }, markedSnippet(hit.snippet_html)),
                  ),
                );
              }),
            )
          : null,
        cursor ? h('button', { type: 'button', class: 'button more', onclick: () => search(q, true) }, 'More results') : null,
      );
    } catch (error) {
      replace(results, failed(error, () => search(q, more)));
    }
  }

  replace(conversations, loading('conversations'));
  try {
    const page = await api.get('/api/v1/conversations', { limit: 50 });
    for (const c of page.data) titles.set(c.id, title(c));
    replace(
      conversations,
      page.data.length
        ? h(
            'ul',
            { class: 'rows' },
            page.data.map((c) =>
              h(
                'li',
                { class: 'row' },
                h(
                  'a',
                  { href: `#/conversations/${c.id}`, class: 'person', 'data-testid': 'conversation-link' },
                  avatar(title(c)),
                  h('span', {}, h('strong', {}, title(c)), ' ', h('span', { class: 'badge' }, c.type), c.frozen ? h('span', { class: 'badge frozen' }, 'frozen') : null),
                ),
                when(c.last_activity_at),
              ),
            ),
          )
        : empty('No conversations yet', 'They appear here once your users start them.'),
    );
  } catch (error) {
    replace(conversations, failed(error));
  }
  return null;
}

// -- one conversation -------------------------------------------------------------------------

async function conversation(main, { api, me, can }, id, params) {
  const base = `/api/v1/conversations/${encodeURIComponent(id)}`; // the id comes from the address
  const mine = me.member.user_id;
  const found = params.get('m'); // a search hit: marked wherever it is drawn
  // muted: the mutes in force here, as the log says now (user id → until, null: until lifted).
  const state = { conv: null, messages: [], hasEarlier: false, pins: [], thread: null, muted: new Map() };
  const mutes = () => (can('users.ban') ? api.get(`${base}/mutes`) : Promise.resolve({ data: [] }));
  replace(main, h('p', {}, h('a', { href: '#/conversations' }, '← Conversations')), loading('the conversation'));
  main.classList.add('wide');

  const header = h('div', { class: 'page-head conv-page-head' });
  const notice = h('div', {});
  const timeline = h('ol', { class: 'timeline', tabindex: '0', 'aria-label': 'Messages', 'data-testid': 'timeline' });
  const earlier = h('div', {});
  const compose = h('div', {});
  const side = h('aside', { class: 'conv-side', 'aria-label': 'Participants and pinned messages' });
  const threadPane = h('section', { class: 'thread-pane', 'aria-labelledby': 'thread-title', hidden: true, 'data-testid': 'thread-view' });
  const layout = h('div', { class: 'conv-layout', dataset: { thread: 'false' } }, h('div', { class: 'conv-column' }, notice, earlier, timeline, compose), side, threadPane);

  // The newest page, then earlier ones until message seq `back` is in (a search hit):
  // what is shown stays one unbroken stretch up to the newest, so live refreshes fit.
  async function loadAll(back) {
    const [conv, history, pins, muted] = await Promise.all([api.get(base), api.get(`${base}/messages`, { limit: PAGE }), api.get(`${base}/pins`), mutes()]);
    state.conv = conv;
    state.muted = new Map(muted.data.map((m) => [m.user_id, m.until]));
    state.messages = history.data;
    state.hasEarlier = history.has_more;
    state.pins = pins.data;
    for (let n = 0; back && state.hasEarlier && state.messages.length && state.messages[0].seq > back && n < MAX_BACK; n += 1) await earlierMessages();
  }

  async function earlierMessages() {
    const page = await api.get(`${base}/messages`, { before: state.messages[0].seq, limit: PAGE });
    const have = new Set(state.messages.map((m) => m.id));
    state.messages = page.data.filter((m) => !have.has(m.id)).concat(state.messages);
    state.hasEarlier = page.has_more;
  }

  // Re-reads what is shown: the newest messages (as many as shown), the pins, the thread.
  async function refresh() {
    const [conv, history, pins, muted] = await Promise.all([
      api.get(base),
      api.get(`${base}/messages`, { limit: Math.min(100, Math.max(PAGE, state.messages.length)) }),
      api.get(`${base}/pins`),
      mutes(),
    ]);
    state.conv = conv;
    state.muted = new Map(muted.data.map((m) => [m.user_id, m.until]));
    const known = new Map(history.data.map((m) => [m.id, m]));
    const older = state.messages.filter((m) => !known.has(m.id) && m.seq < (history.data[0] ? history.data[0].seq : Infinity));
    state.messages = older.concat(history.data);
    state.pins = pins.data;
    if (state.thread) await loadThread(state.thread.parent.id, false);
    drawAll(true);
  }

  function drawAll(keepFocus = false) {
    const focused = keepFocus ? document.activeElement : null;
    const focusKey = focused && focused.dataset ? focused.dataset.key : null;
    drawHeader();
    drawTimeline();
    drawSide();
    if (state.thread) drawThread();
    if (!compose.firstChild) replace(compose, composerOrJoin(null));
    if (focusKey) main.querySelector(`[data-key="${CSS.escape(focusKey)}"]`)?.focus();
  }

  // -- header: title, frozen, freeze / thaw ---------------------------------------------------
  function drawHeader() {
    const c = state.conv;
    replace(
      header,
      h('div', {}, h('h1', { tabindex: '-1', 'data-key': 'title' }, title(c)), h('p', { class: 'muted' }, h('span', { class: 'badge' }, c.type), c.frozen ? h('span', { class: 'badge frozen', 'data-testid': 'frozen' }, 'frozen') : null, ` · ${c.participants.length} participants · started `, when(c.created_at))),
      h(
        'div',
        { class: 'actions' },
        can('moderation')
          ? h('button', {
              type: 'button',
              class: c.frozen ? 'button' : 'button danger-quiet',
              'data-key': 'freeze',
              onclick: () => act(() => api.call(c.frozen ? 'DELETE' : 'POST', `${base}/freeze`), c.frozen ? 'The conversation is open again.' : 'The conversation is frozen: read-only for its users.'),
            }, c.frozen ? 'Unfreeze' : 'Freeze')
          : null,
      ),
    );
    replace(notice, c.frozen ? h('p', { class: 'notice' }, 'Frozen: its users can read but not post, edit, react or type until it is unfrozen. Your team can still write here.') : null);
  }

  async function act(run, done) {
    try {
      await run();
      announce(done);
      await refresh();
    } catch (error) {
      announce(error.message);
      showProblem(error);
    }
  }

  function showProblem(error) {
    replace(notice, h('p', { class: 'form-error', role: 'alert', 'data-testid': 'problem' }, error.message));
  }

  // -- messages ----------------------------------------------------------------------------
  function drawTimeline() {
    replace(
      earlier,
      state.hasEarlier
        ? h('button', {
            type: 'button',
            class: 'button more',
            'data-key': 'earlier',
            onclick: async () => {
              try {
                await earlierMessages();
                drawTimeline();
              } catch (error) {
                showProblem(error);
              }
            },
          }, 'Show earlier messages')
        : null,
    );
    const stick = timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 40;
    replace(timeline, state.messages.length ? state.messages.map((m) => messageItem(m)) : h('li', { class: 'muted' }, 'No messages yet.'));
    if (stick) timeline.scrollTop = timeline.scrollHeight;
  }

  function messageItem(m, where = 'timeline') {
    const inThread = where !== 'timeline';
    const name = m.sender ? m.sender.name : 'System';
    const actions = [];
    if (!inThread && !m.deleted) {
      const replies = m.thread ? m.thread.reply_count : 0;
      if (replies || can('conversations.reply')) {
        actions.push(
          h('button', { type: 'button', class: 'link-button', 'data-key': `thread-${m.id}`, 'data-testid': 'open-thread', onclick: (e) => openThread(m.id, e.currentTarget) }, replies ? (replies === 1 ? '1 reply' : `${replies} replies`) : 'Reply in thread'),
        );
      }
    }
    if (can('moderation') && !m.deleted && !m.parent_id) {
      actions.push(
        h('button', {
          type: 'button',
          class: 'link-button',
          'data-key': `pin-${m.id}`,
          'data-testid': m.pinned_at ? 'unpin' : 'pin',
          onclick: () => act(() => api.call(m.pinned_at ? 'DELETE' : 'POST', `${base}/messages/${m.id}/pin`), m.pinned_at ? 'Unpinned.' : 'Pinned.'),
        }, m.pinned_at ? 'Unpin' : 'Pin'),
      );
    }
    return h(
      'li',
      {
        class: `post${m.sender && m.sender.id === mine ? ' ours' : ''}${m.id === found ? ' found' : ''}`,
        'data-testid': { timeline: 'message', parent: 'thread-parent', reply: 'reply' }[where],
        'data-key': `${where}-${m.id}`,
        dataset: { id: m.id },
        tabindex: '-1',
      },
      avatar(name),
      h(
        'div',
        { class: 'post-body' },
        h('p', { class: 'meta' }, h('strong', {}, name), ' ', when(m.created_at), m.edited_at ? h('span', { class: 'muted' }, ' (edited)') : null, m.pinned_at ? h('span', { class: 'badge pinned' }, 'pinned') : null, m.hidden ? h('span', { class: 'badge hidden' }, 'hidden') : null),
        h('p', { class: m.deleted ? 'text muted' : 'text' }, m.deleted ? 'This message was deleted.' : content(m)),
        !m.deleted && m.attachments && m.attachments.length ? h('p', { class: 'muted' }, m.attachments.map((a) => h('a', { href: a.url || '#', target: '_blank', rel: 'noopener', class: 'file' }, `📎 ${a.filename}`))) : null,
        actions.length ? h('div', { class: 'post-actions' }, actions) : null,
      ),
    );
  }

  // The text cut by its mention entities: each part a text node, a mention a <span>.
  function content(m) {
    return mentionParts(m.content, m.mentions).map((part) =>
      part.userId ? h('span', { class: 'mention', 'data-testid': 'mention', dataset: { userId: part.userId } }, part.text) : part.text,
    );
  }

  // -- participants (mute, ban) and pins ----------------------------------------------------
  function drawSide() {
    const c = state.conv;
    replace(
      side,
      h('h2', {}, 'Participants'),
      h(
        'ul',
        { class: 'people' },
        c.participants.map((p) =>
          h(
            'li',
            { class: 'person-row', 'data-testid': 'participant', dataset: { id: p.id } },
            h('span', { class: 'person' }, avatar(p.name), h('span', {}, p.name, p.id === mine ? ' (you)' : '', state.muted.has(p.id) ? h('span', { class: 'badge hidden', 'data-testid': 'muted' }, state.muted.get(p.id) ? ['muted until ', when(state.muted.get(p.id))] : 'muted') : null)),
            can('users.ban') && p.id !== mine
              ? h(
                  'span',
                  { class: 'actions' },
                  state.muted.has(p.id)
                    ? h('button', { type: 'button', class: 'button small', 'data-key': `unmute-${p.id}`, onclick: () => act(async () => { await api.delete(`${base}/mutes/${p.id}`); state.muted.delete(p.id); }, `${p.name} can post again.`) }, `Unmute ${p.name}`)
                    : h('button', { type: 'button', class: 'button small', 'data-key': `mute-${p.id}`, onclick: () => restrict('mute', p) }, `Mute ${p.name}`),
                  c.type === 'direct' ? null : h('button', { type: 'button', class: 'button small danger-quiet', 'data-key': `ban-${p.id}`, onclick: () => restrict('ban', p) }, `Ban ${p.name}`),
                )
              : null,
          ),
        ),
      ),
      h('h2', {}, `Pinned (${state.pins.length})`),
      state.pins.length
        ? h(
            'ul',
            { class: 'pins', 'data-testid': 'pins' },
            state.pins.map((m) =>
              h(
                'li',
                { class: 'pin', 'data-testid': 'pinned' },
                h('p', { class: 'meta' }, h('strong', {}, m.sender ? m.sender.name : 'System'), ' ', when(m.created_at)),
                h('p', { class: 'text' }, content(m)),
                can('moderation') ? h('button', { type: 'button', class: 'link-button', 'data-key': `pinned-${m.id}`, onclick: () => act(() => api.delete(`${base}/messages/${m.id}/pin`), 'Unpinned.') }, 'Unpin') : null,
              ),
            ),
          )
        : h('p', { class: 'muted' }, 'Nothing pinned.'),
    );
  }

  // Mute or ban `person` here, for a while or until lifted: a dialog, as confirmDialog.
  function restrict(kind, person) {
    const opener = document.activeElement;
    const verb = kind === 'mute' ? 'Mute' : 'Ban';
    const duration = h('select', { id: 'restrict-duration' }, DURATIONS.map(([v, label]) => h('option', { value: v, selected: v === '86400' }, label)));
    const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const dialog = h(
      'dialog',
      { class: 'dialog', 'aria-labelledby': 'restrict-title', 'data-testid': 'restrict-dialog' },
      h(
        'form',
        {
          class: 'stack',
          onsubmit: async (e) => {
            e.preventDefault();
            const seconds = duration.value ? Number(duration.value) : undefined;
            try {
              await api.post(`${base}/${kind === 'mute' ? 'mutes' : 'bans'}`, { user_id: person.id, duration_seconds: seconds });
              dialog.close('ok');
              const how = seconds ? ` for ${duration.selectedOptions[0].textContent}` : ' until you lift it';
              announce(kind === 'mute' ? `${person.name} is muted here${how}.` : `${person.name} is banned from this conversation${how}.`);
              await refresh();
            } catch (failure) {
              error.hidden = false;
              error.textContent = failure.message;
            }
          },
        },
        h('h2', { id: 'restrict-title' }, kind === 'mute' ? `Mute ${person.name} here?` : `Ban ${person.name} from this conversation?`),
        h('p', {}, kind === 'mute' ? 'They keep reading but cannot post, edit, react or type here.' : 'They are removed from this conversation now and cannot be added back until the ban ends.'),
        h('div', { class: 'field' }, h('label', { for: 'restrict-duration' }, 'For how long'), duration),
        error,
        h('div', { class: 'actions' }, h('button', { type: 'button', class: 'button', onclick: () => dialog.close('cancel') }, 'Cancel'), h('button', { type: 'submit', class: kind === 'ban' ? 'button danger' : 'button primary' }, verb)),
      ),
    );
    dialog.addEventListener('close', () => {
      dialog.remove();
      const back = opener && opener.isConnected ? opener : header.querySelector('h1');
      back.focus();
    });
    document.body.append(dialog);
    dialog.showModal();
    duration.focus();
  }

  // -- the thread view ---------------------------------------------------------------------
  let threadOpener = null;
  async function loadThread(parentId, fresh) {
    // Fresh: the newest page. Again (live): as many of the newest as shown, and the earlier
    // ones shown then kept (read after the answer: "Show earlier replies" may have added
    // some meanwhile).
    const limit = fresh ? THREAD_PAGE : Math.min(100, Math.max(THREAD_PAGE, state.thread.replies.length));
    const page = await api.get(`${base}/messages/${parentId}/thread`, { limit });
    const now = fresh ? null : state.thread;
    if (!fresh && (!now || now.parent.id !== parentId)) return; // closed or another one
    const first = page.data[0] ? page.data[0].seq : Infinity;
    const kept = now ? now.replies.filter((r) => r.seq < first) : [];
    state.thread = { parent: page.parent, replies: kept.concat(page.data), hasEarlier: kept.length ? now.hasEarlier : page.has_more };
  }

  // The page of replies before the first shown, put in front (false: the thread changed).
  async function earlierReplies(parentId) {
    const th = state.thread;
    const page = await api.get(`${base}/messages/${parentId}/thread`, { before: th.replies[0].seq, limit: THREAD_PAGE });
    const now = state.thread; // a live refresh may have read it again meanwhile
    if (!now || now.parent.id !== parentId) return false;
    const have = new Set(now.replies.map((r) => r.id));
    now.replies = page.data.filter((r) => !have.has(r.id)).concat(now.replies);
    now.hasEarlier = page.has_more;
    return true;
  }

  async function openThread(parentId, opener, focusId) {
    threadOpener = opener || threadOpener;
    try {
      await loadThread(parentId, true);
      const wanted = () => !focusId || state.thread.replies.some((r) => r.id === focusId);
      for (let n = 0; !wanted() && state.thread.hasEarlier && state.thread.replies.length && n < MAX_BACK; n += 1) {
        if (!(await earlierReplies(parentId))) break;
      }
    } catch (error) {
      showProblem(error);
      return;
    }
    threadPane.hidden = false;
    layout.dataset.thread = 'true';
    drawThread(true);
    const target = focusId && threadPane.querySelector(`[data-id="${CSS.escape(focusId)}"]`);
    if (target) target.focus();
    else threadPane.querySelector('h2').focus();
  }

  function closeThread() {
    state.thread = null;
    threadPane.hidden = true;
    layout.dataset.thread = 'false';
    threadComposer = null;
    replace(threadFoot);
    const again = threadOpener && threadOpener.dataset.key && main.querySelector(`[data-key="${CSS.escape(threadOpener.dataset.key)}"]`);
    (again || header.querySelector('h1')).focus();
    threadOpener = null;
  }

  let threadComposer = null;
  const threadBody = h('div', { class: 'thread-body' });
  const threadFoot = h('div', {});
  function drawThread(fresh = false, atTop = false) {
    const th = state.thread;
    const list = h('ol', { class: 'timeline replies', 'aria-label': 'Replies', 'data-testid': 'replies' }, th.replies.length ? th.replies.map((m) => messageItem(m, 'reply')) : h('li', { class: 'muted' }, 'No replies yet.'));
    if (fresh || !threadComposer || threadComposer.dataset.parent !== th.parent.id) {
      threadComposer = composerOrJoin(th.parent.id);
      threadComposer.dataset.parent = th.parent.id;
      replace(threadFoot, threadComposer);
    }
    if (threadPane.firstChild !== threadBody) replace(threadPane, threadBody, threadFoot);
    replace(
      threadBody,
      h('div', { class: 'thread-head' }, h('h2', { id: 'thread-title', tabindex: '-1', 'data-key': 'thread-title' }, 'Thread'), h('button', { type: 'button', class: 'button', 'data-testid': 'close-thread', onclick: closeThread }, 'Close thread')),
      h('ol', { class: 'timeline parent', 'aria-label': 'The message' }, messageItem(th.parent, 'parent')),
      h('p', { class: 'muted' }, th.parent.thread ? `${th.parent.thread.reply_count} ${th.parent.thread.reply_count === 1 ? 'reply' : 'replies'}` : 'No replies yet'),
      th.hasEarlier
        ? h('button', {
            type: 'button',
            class: 'button more',
            'data-key': 'earlier-replies',
            onclick: async () => {
              try {
                if (!(await earlierReplies(th.parent.id))) return;
                drawThread(false, true);
                threadPane.querySelector('[data-testid=reply]')?.focus();
              } catch (error) {
                showProblem(error);
              }
            },
          }, 'Show earlier replies')
        : null,
      list,
    );
    list.scrollTop = atTop ? 0 : list.scrollHeight; // the newest replies, as in a chat
  }
  threadPane.addEventListener('keydown', (e) => {
    if (e.key === 'Escape' && !e.defaultPrevented) {
      e.preventDefault();
      closeThread();
    }
  });

  // -- writing ------------------------------------------------------------------------------
  function composerOrJoin(parentId) {
    if (!can('conversations.reply')) return h('div', {});
    const member = state.conv.participants.some((p) => p.id === mine);
    if (!member) {
      return h(
        'div',
        { class: 'join' },
        h('p', { class: 'muted' }, 'You are not a participant: join to write here (everyone in it sees you joined).'),
        h('button', {
          type: 'button',
          class: 'button',
          'data-testid': 'join',
          onclick: async () => {
            try {
              await api.post(`${base}/participants`, { user_id: mine });
              await refresh();
              replace(compose, composerOrJoin(null));
              if (state.thread) drawThread(true);
              (parentId ? threadPane : compose).querySelector('textarea')?.focus();
            } catch (error) {
              showProblem(error);
            }
          },
        }, 'Join the conversation'),
      );
    }
    const boxId = parentId ? 'thread-composer' : 'main-composer';
    const box = h('textarea', { id: boxId, rows: '2', 'data-testid': parentId ? 'thread-box' : 'message-box', placeholder: parentId ? 'Reply in the thread… (@ to mention)' : 'Write a message… (@ to mention)' });
    const error = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const send = h('button', { type: 'submit', class: 'button primary' }, parentId ? 'Reply' : 'Send');
    const anchor = h('div', { class: 'mention-anchor' });
    const form = h(
      'form',
      {
        class: 'composer',
        onsubmit: async (e) => {
          e.preventDefault();
          const text = box.value.trim();
          if (!text) return;
          const chosen = [...picker.chosen]; // kept for another try if this one fails
          const mentions = picker.take(text);
          send.disabled = true;
          error.hidden = true;
          try {
            await api.post(`${base}/messages`, { content: text, mentions, parent_id: parentId || undefined });
            box.value = '';
            announce(parentId ? 'Reply sent.' : 'Message sent.');
            await refresh();
          } catch (failure) {
            picker.chosen = chosen;
            error.hidden = false;
            error.textContent = failure.message;
          } finally {
            send.disabled = false;
            box.focus();
          }
        },
      },
      h('label', { for: boxId, class: 'visually-hidden' }, parentId ? 'Reply in the thread' : 'Message'),
      anchor,
      box,
      h('div', { class: 'composer-foot' }, error, send),
    );
    const people = () => state.conv.participants.filter((p) => p.id !== mine).map((p) => ({ id: p.id, name: p.name }));
    const picker = new MentionPicker(box, { people, t, anchor });
    box.addEventListener('keydown', (e) => {
      if (picker.onKey(e)) return;
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    return form;
  }

  // -- first draw ---------------------------------------------------------------------------
  try {
    await loadAll(params.get('thread') ? null : Number(params.get('at')) || null);
  } catch (error) {
    replace(main, h('p', {}, h('a', { href: '#/conversations' }, '← Conversations')), failed(error, () => conversation(main, { api, me, can }, id, params)));
    return () => main.classList.remove('wide');
  }
  replace(main, h('p', {}, h('a', { href: '#/conversations' }, '← Conversations')), header, layout);
  document.title = `${title(state.conv)} · Confab`;
  drawAll();
  if (params.get('thread')) await openThread(encodeURIComponent(params.get('thread')), null, params.get('m'));
  else if (params.get('m')) {
    const target = timeline.querySelector(`[data-id="${CSS.escape(found)}"]`);
    if (target) {
      target.focus();
      target.scrollIntoView({ block: 'center' });
    }
  } else header.querySelector('h1').focus();

  // -- live ------------------------------------------------------------------------------
  let socket = null;
  let timer = null;
  let gone = false;
  const later = () => {
    clearTimeout(timer);
    timer = setTimeout(() => refresh().catch(() => {}), 150);
  };
  connect(api, me, {
    event: (channel, name) => {
      if (channel === conversationChannel(id) && !name.startsWith('user.typing') && !name.startsWith('client-')) later();
    },
    subscribed: () => later(), // the first time too: what came between the first read and now
  }).then(
    (s) => {
      socket = s;
      if (gone) socket.pusher.disconnect();
      else socket.subscribe(conversationChannel(id));
    },
    () => {},
  );

  return () => {
    gone = true;
    clearTimeout(timer);
    main.classList.remove('wide');
    if (socket) socket.pusher.disconnect();
  };
}
