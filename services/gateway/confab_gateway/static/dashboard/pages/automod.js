// Automatic moderation: the workspace's rules, applied on the send path before a message is
// accepted (word lists, RE2 regular expressions, the built-in phone, email and URL
// detectors), each with an action, and the dry-run switch.
//
// - The API keeps the whole rule set as one object (GET/PUT /api/v1/moderation/automod):
//   every change here sends the whole set, built from what the page last read, with the
//   version it read (someone else's save in between is a 409, not lost), and shows what
//   the API answered. Reading needs `moderation`; changing needs `settings.manage`,
//   so a moderator sees the rules without the controls (and the API's 403 if asked).
// - A refusal (422) names the rule and field in `details` (`rules[2]`, `rules[2].pattern`):
//   it is shown next to that field of the rule being edited, the rest as the form's error.
// - The link-preview switch (GET/PUT /api/v1/settings/link-previews) is a setting too:
//   shown to those who may change settings only.

import { ApiError } from '../api.js';
import { announce, confirmDialog, empty, failed, h, loading, replace } from '../dom.js';

const ROUTE = '/api/v1/moderation/automod';
const PREVIEWS = '/api/v1/settings/link-previews';

export const KINDS = [
  ['word', 'Word list', 'Whole words, any case.'],
  ['regex', 'Regular expression', 'RE2 syntax: no back-references or look-around.'],
  ['phone', 'Phone numbers', 'Built in: seven to fifteen digits with the usual separators.'],
  ['email', 'Email addresses', 'Built in.'],
  ['url', 'Links and web addresses', 'Built in: http(s) links, www. and common domain endings.'],
];
export const ACTIONS = [
  ['block', 'Block', 'The message is refused; the sender is told why.'],
  ['mask', 'Mask', 'What matched is replaced by ***.'],
  ['flag', 'Flag', 'Posted, and reported to the moderation queue.'],
  ['shadow', 'Shadow', 'Only the sender sees it.'],
];
const label = (list, value) => (list.find(([v]) => v === value) || [value, value])[1];

export async function render(main, { api, can }) {
  const editable = can('settings.manage');
  let settings = null;
  let previews = null; // {enabled}, for those who may change settings
  const body = h('div', {});
  replace(
    main,
    h('div', { class: 'page-head' }, h('h1', {}, 'Automatic moderation')),
    h('p', { class: 'muted' }, 'Rules run on every message before it is accepted. The strongest action of the rules that match applies: block, then mask, flag and shadow.'),
    body,
  );

  async function load() {
    replace(body, loading('the rules'));
    try {
      [settings, previews] = await Promise.all([api.get(ROUTE), editable ? api.get(PREVIEWS) : null]);
      draw();
    } catch (error) {
      replace(body, failed(error, load));
    }
  }

  // Sends the whole set with the version it was built from; on a refusal the caller shows
  // it (and nothing here changed). If someone else saved meanwhile (409), the page takes
  // their rules, so saving again applies this change on top of theirs, not over them.
  async function save(rules, dryRun) {
    try {
      settings = await api.call('PUT', ROUTE, { rules, dry_run: dryRun, version: settings.version });
    } catch (failure) {
      if (failure.status !== 409) throw failure;
      settings = await api.get(ROUTE);
      throw new ApiError(409, failure.code, 'Someone else changed the rules meanwhile. Save again to apply your change to theirs.');
    }
  }

  function draw(focus) {
    const rules = settings.rules;
    const error = h('p', { class: 'form-error', role: 'alert', hidden: true, 'data-testid': 'automod-error' });
    const dry = h('input', {
      id: 'dry-run',
      type: 'checkbox',
      checked: settings.dry_run,
      disabled: !editable,
      'aria-describedby': 'dry-run-hint',
      onchange: async () => {
        dry.disabled = true;
        error.hidden = true;
        try {
          await save(settings.rules, dry.checked);
          announce(settings.dry_run ? 'Dry run is on: rules only flag.' : 'Dry run is off: rules act.');
          draw('#dry-run');
        } catch (failure) {
          dry.checked = !dry.checked;
          dry.disabled = false;
          showError(error, failure);
        }
      },
    });
    const linkPreviews = previews
      ? h('input', {
          id: 'link-previews',
          type: 'checkbox',
          checked: previews.enabled,
          'aria-describedby': 'link-previews-hint',
          onchange: async (event) => {
            const box = event.currentTarget;
            box.disabled = true;
            error.hidden = true;
            try {
              previews = await api.call('PUT', PREVIEWS, { enabled: box.checked });
              announce(previews.enabled ? 'Link previews are on.' : 'Link previews are off.');
              draw('#link-previews');
            } catch (failure) {
              box.checked = !box.checked;
              box.disabled = false;
              showError(error, failure);
            }
          },
        })
      : null;
    const list = rules.length
      ? h('ul', { class: 'cards rules', 'aria-label': 'Rules' }, rules.map((rule, index) => ruleCard(rule, index, error)))
      : empty('No rules yet', editable ? 'Add one: a word list, a pattern, or a detector for phone numbers, email addresses or links.' : 'An owner or admin can add them.');
    replace(
      body,
      h(
        'div',
        { class: 'settings check dry-run' },
        dry,
        h('label', { for: 'dry-run' }, 'Dry run'),
        h('p', { class: 'hint', id: 'dry-run-hint' }, 'Every rule that matches only flags the message to the moderation queue; nothing is blocked, masked or hidden. Use it to try rules out.'),
      ),
      linkPreviews
        ? h(
            'div',
            { class: 'settings check link-previews' },
            linkPreviews,
            h('label', { for: 'link-previews' }, 'Link previews'),
            h('p', { class: 'hint', id: 'link-previews-hint' }, 'The first link of a message gets a preview: its page’s title, description and image, fetched by the server. Off: no page is fetched for new messages.'),
          )
        : null,
      error,
      h('div', { class: 'page-head' }, h('h2', {}, `Rules (${rules.length})`), editable ? h('button', { type: 'button', class: 'button primary', 'data-testid': 'add-rule', onclick: (e) => edit(null, e.currentTarget) }, 'Add a rule') : null),
      editable ? null : h('p', { class: 'notice', 'data-testid': 'read-only' }, 'Only owners and admins can change these rules (settings).'),
      list,
    );
    if (focus) body.querySelector(focus)?.focus();
  }

  function ruleCard(rule, index, error) {
    const what =
      rule.kind === 'word' ? rule.words.join(', ') : rule.kind === 'regex' ? rule.pattern : (KINDS.find(([v]) => v === rule.kind) || [])[2] || '';
    return h(
      'li',
      { class: 'card rule', 'data-testid': 'rule', dataset: { id: rule.id } },
      h(
        'div',
        { class: 'card-head' },
        h('h3', { class: 'rule-name' }, rule.id),
        h('span', { class: `badge action-${rule.action}` }, label(ACTIONS, rule.action)),
      ),
      h('p', {}, h('span', { class: 'muted' }, `${label(KINDS, rule.kind)}: `), h('span', { class: rule.kind === 'regex' ? 'mono' : '' }, what)),
      editable
        ? h(
            'div',
            { class: 'actions' },
            h('button', { type: 'button', class: 'button', 'aria-label': `Edit ${rule.id}`, onclick: (e) => edit(index, e.currentTarget) }, 'Edit'),
            h('button', {
              type: 'button',
              class: 'button danger-quiet',
              'aria-label': `Remove ${rule.id}`,
              onclick: async () => {
                const ok = await confirmDialog({ title: `Remove the rule ${rule.id}?`, body: 'Messages are no longer checked against it from the next one on.', confirm: 'Remove', danger: true });
                if (!ok) return;
                try {
                  await save(settings.rules.filter((_, i) => i !== index), settings.dry_run);
                  announce(`Rule ${rule.id} removed.`);
                  draw('[data-testid=add-rule]');
                } catch (failure) {
                  showError(error, failure);
                }
              },
            }, 'Remove'),
          )
        : null,
    );
  }

  // The rule form, for a new rule (index null) or rule `index`, in a card of its own.
  function edit(index, opener) {
    const rule = index === null ? { id: '', kind: 'word', action: 'block', words: [], pattern: null } : settings.rules[index];
    const taken = new Set(settings.rules.map((r) => r.id));
    let n = settings.rules.length + 1;
    while (taken.has(`rule-${n}`)) n += 1;
    const fieldError = (id) => h('p', { class: 'form-error field-error', id: `${id}-error`, hidden: true });
    const describe = (id, hint) => `${hint ? `${id}-hint ` : ''}${id}-error`;
    const name = h('input', { id: 'rule-id', required: true, maxlength: '64', pattern: '[A-Za-z0-9_-]+', value: rule.id || `rule-${n}`, 'aria-describedby': describe('rule-id', true) });
    const kind = h('select', { id: 'rule-kind', 'aria-describedby': describe('rule-kind', true) }, KINDS.map(([v, text]) => h('option', { value: v, selected: v === rule.kind }, text)));
    const kindHint = h('p', { class: 'hint', id: 'rule-kind-hint' });
    const words = h('textarea', { id: 'rule-words', rows: '3', 'aria-describedby': describe('rule-words', true) }, (rule.words || []).join('\n'));
    const pattern = h('input', { id: 'rule-pattern', class: 'mono', maxlength: '500', value: rule.pattern || '', 'aria-describedby': describe('rule-pattern', true), autocomplete: 'off', spellcheck: 'false' });
    const action = h('fieldset', { class: 'choices', 'aria-describedby': 'rule-action-error' }, h('legend', {}, 'Action'), ACTIONS.map(([v, text, hint]) =>
      h('div', { class: 'check' }, h('input', { type: 'radio', name: 'rule-action', id: `rule-action-${v}`, value: v, checked: v === rule.action }), h('label', { for: `rule-action-${v}` }, text), h('p', { class: 'hint' }, hint)),
    ));
    const errors = {
      id: fieldError('rule-id'),
      kind: fieldError('rule-kind'),
      words: fieldError('rule-words'),
      pattern: fieldError('rule-pattern'),
      action: fieldError('rule-action'),
    };
    const wordsField = h('div', { class: 'field' }, h('label', { for: 'rule-words' }, 'Words'), words, h('p', { class: 'hint', id: 'rule-words-hint' }, 'One a line (or separated by commas); up to 200.'), errors.words);
    const patternField = h('div', { class: 'field' }, h('label', { for: 'rule-pattern' }, 'Pattern'), pattern, h('p', { class: 'hint', id: 'rule-pattern-hint' }, 'For example \\bfree\\s+money\\b. Add (?i) to ignore case.'), errors.pattern);
    const formError = h('p', { class: 'form-error', role: 'alert', hidden: true });
    const showKind = () => {
      wordsField.hidden = kind.value !== 'word';
      patternField.hidden = kind.value !== 'regex';
      kindHint.textContent = (KINDS.find(([v]) => v === kind.value) || [])[2] || '';
    };
    kind.addEventListener('change', showKind);
    showKind();
    const close = () => {
      form.remove();
      if (opener && opener.isConnected) opener.focus();
      else body.querySelector('[data-testid=add-rule]')?.focus();
    };
    const submit = h('button', { type: 'submit', class: 'button primary' }, index === null ? 'Add rule' : 'Save rule');
    const form = h(
      'form',
      {
        class: 'card rule-form stack',
        'aria-labelledby': 'rule-form-title',
        'data-testid': 'rule-form',
        novalidate: true, // the API's answer is the one shown, next to its field
        onkeydown: (e) => {
          if (e.key === 'Escape') {
            e.preventDefault();
            close();
          }
        },
        onsubmit: async (e) => {
          e.preventDefault();
          for (const box of [...Object.values(errors), formError]) box.hidden = true;
          for (const input of [name, kind, words, pattern]) input.removeAttribute('aria-invalid');
          const next = {
            id: name.value.trim(),
            kind: kind.value,
            action: form.querySelector('input[name=rule-action]:checked').value,
          };
          if (next.kind === 'word') next.words = words.value.split(/[\n,]/).map((w) => w.trim()).filter(Boolean);
          if (next.kind === 'regex') next.pattern = pattern.value;
          const rules = index === null ? [...settings.rules, next] : settings.rules.map((r, i) => (i === index ? next : r));
          const at = index === null ? rules.length - 1 : index;
          submit.disabled = true;
          try {
            await save(rules, settings.dry_run);
            announce(index === null ? `Rule ${next.id} added.` : `Rule ${next.id} saved.`);
            draw('[data-testid=add-rule]');
          } catch (failure) {
            place(failure, at, next.kind, { errors, inputs: { id: name, kind, words, pattern }, formError });
          } finally {
            submit.disabled = false;
          }
        },
      },
      h('h3', { id: 'rule-form-title' }, index === null ? 'New rule' : `Edit ${rule.id}`),
      h('div', { class: 'field' }, h('label', { for: 'rule-id' }, 'Name'), name, h('p', { class: 'hint', id: 'rule-id-hint' }, 'Letters, digits, - and _; reports name the rule that flagged a message.'), errors.id),
      h('div', { class: 'field' }, h('label', { for: 'rule-kind' }, 'What to look for'), kind, kindHint, errors.kind),
      wordsField,
      patternField,
      action,
      errors.action,
      formError,
      h('div', { class: 'actions' }, submit, h('button', { type: 'button', class: 'button', onclick: close }, 'Cancel')),
    );
    body.querySelector('[data-testid=rule-form]')?.remove();
    body.querySelector('.rules, .state.empty')?.before(form);
    name.focus();
    name.select();
  }

  await load();
}

function showError(box, failure) {
  box.hidden = false;
  box.textContent = failure.message;
}

// The API's details name `rules[i]` or `rules[i].<field>[…]`: each goes next to that field
// of the rule being edited (a whole-rule refusal: the field its kind is about).
function place(failure, at, kind, { errors, inputs, formError }) {
  const details = failure.details || {};
  let placed = false;
  for (const [key, text] of Object.entries(details)) {
    const found = /^rules\[(\d+)\](?:\.(\w+))?/.exec(key);
    if (!found || Number(found[1]) !== at) continue;
    const whole = /unique/.test(String(text)) ? 'id' : kind === 'word' ? 'words' : kind === 'regex' ? 'pattern' : 'kind';
    const field = found[2] || whole;
    const box = errors[field] || errors.kind;
    box.hidden = false;
    box.textContent = `${failure.message} ${text ? `(${text})` : ''}`.trim();
    const input = inputs[field] || inputs.kind;
    input.setAttribute('aria-invalid', 'true');
    if (!placed) input.focus();
    placed = true;
  }
  if (!placed) {
    formError.hidden = false;
    formError.textContent = failure.message;
  }
}
