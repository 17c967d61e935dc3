// Reports: conversations and messages per day, median first response and resolution
// times, for the last 7, 14, 30 or 90 days (GET /api/v1/support/reports, computed from
// read models projected from the log). Charts are inline SVG; each has its numbers in a
// table below it for screen readers and for copying.

import { empty, failed, h, loading, replace } from '../dom.js';

const RANGES = [7, 14, 30, 90];
const SVG = 'http://www.w3.org/2000/svg';

export async function render(main, { api }) {
  let days = Number(sessionStorage.getItem('confab.reports.days')) || 14;
  const body = h('div', {});
  const picker = h(
    'div',
    { class: 'segmented', role: 'group', 'aria-label': 'Range' },
    RANGES.map((n) =>
      h('button', {
        type: 'button',
        class: 'segment',
        'aria-pressed': String(n === days),
        onclick: () => {
          days = n;
          sessionStorage.setItem('confab.reports.days', String(n));
          for (const b of picker.querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.textContent === `${n} days`));
          load();
        },
      }, `${n} days`),
    ),
  );
  replace(main, h('div', { class: 'page-head' }, h('h1', {}, 'Reports'), picker), body);

  async function load() {
    replace(body, loading('the reports'));
    const until = new Date();
    const since = new Date(until.getTime() - (days - 1) * 86_400_000);
    const iso = (d) => d.toISOString().slice(0, 10);
    try {
      const report = await api.get('/api/v1/support/reports', { since: iso(since), until: iso(until) });
      draw(report);
    } catch (error) {
      replace(body, failed(error, load));
    }
  }

  function draw(report) {
    const t = report.totals;
    const cards = h(
      'div',
      { class: 'kpis' },
      kpi('Conversations', String(t.conversations)),
      kpi('Messages', String(t.messages)),
      kpi('Median first response', duration(t.median_first_response_seconds)),
      kpi('Median time to resolve', duration(t.median_resolution_seconds)),
    );
    const note = h('p', { class: 'muted' }, `${report.since} to ${report.until} (UTC days). Times are measured from when a conversation started.`);
    if (!t.conversations && !t.messages) {
      replace(body, cards, note, empty('No support conversations in this range', 'They appear here once visitors write in.'));
      return;
    }
    const d = report.days;
    replace(
      body,
      cards,
      note,
      h(
        'div',
        { class: 'charts' },
        chart('Conversations per day', d, (x) => x.conversations, 'bar', String),
        chart('Messages per day', d, (x) => x.messages, 'bar', String),
        chart('Median first response', d, (x) => x.median_first_response_seconds, 'line', duration),
        chart('Median time to resolve', d, (x) => x.median_resolution_seconds, 'line', duration),
      ),
    );
  }

  await load();
}

function kpi(label, value) {
  return h('div', { class: 'kpi' }, h('p', { class: 'kpi-label' }, label), h('p', { class: 'kpi-value' }, value));
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined) return '—';
  if (seconds < 60) return `${Math.round(seconds)} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 86400) return `${(seconds / 3600).toFixed(1)} h`;
  return `${(seconds / 86400).toFixed(1)} d`;
}

function svg(tag, attrs = {}, text) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

function chart(title, days, value, kind, format) {
  const W = 520;
  const H = 180;
  const pad = { left: 44, right: 10, top: 12, bottom: 26 };
  const values = days.map(value);
  const max = Math.max(1, ...values.filter((v) => v !== null));
  const x = (i) => pad.left + ((W - pad.left - pad.right) * (i + 0.5)) / days.length;
  const y = (v) => H - pad.bottom - ((H - pad.top - pad.bottom) * v) / max;
  const shown = values.filter((v) => v !== null);
  const summary = shown.length ? `${title}: from ${format(Math.min(...shown))} to ${format(Math.max(...shown))}.` : `${title}: no data.`;
  const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': summary, class: 'chart' });
  for (const f of [0, 0.5, 1]) {
    const gy = y(max * f);
    root.append(svg('line', { x1: pad.left, x2: W - pad.right, y1: gy, y2: gy, class: 'grid' }));
    root.append(svg('text', { x: pad.left - 6, y: gy + 4, 'text-anchor': 'end', class: 'axis' }, format(max * f)));
  }
  const slot = (W - pad.left - pad.right) / days.length;
  if (kind === 'bar') {
    values.forEach((v, i) => {
      const top = y(v || 0);
      root.append(svg('rect', { x: x(i) - slot * 0.35, width: slot * 0.7, y: top, height: H - pad.bottom - top, rx: 2, class: 'bar' }));
    });
  } else {
    const points = values.map((v, i) => (v === null ? null : `${x(i)},${y(v)}`)).filter(Boolean);
    if (points.length > 1) root.append(svg('polyline', { points: points.join(' '), class: 'line' }));
    values.forEach((v, i) => {
      if (v !== null) root.append(svg('circle', { cx: x(i), cy: y(v), r: 3, class: 'dot' }));
    });
  }
  const every = Math.ceil(days.length / 7);
  days.forEach((dd, i) => {
    const last = i === days.length - 1 && (i % every === 0 || i % every > every / 2);
    if (i % every === 0 || last) root.append(svg('text', { x: x(i), y: H - 8, 'text-anchor': 'middle', class: 'axis' }, dd.day.slice(5)));
  });
  return h(
    'figure',
    { class: 'chart-card' },
    h('figcaption', {}, title),
    root,
    h(
      'details',
      {},
      h('summary', {}, 'Show the numbers'),
      h(
        'table',
        { class: 'table compact' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Day'), h('th', { scope: 'col' }, title))),
        h('tbody', {}, days.map((dd) => h('tr', {}, h('td', {}, dd.day), h('td', {}, format(value(dd)))))),
      ),
    ),
  );
}
