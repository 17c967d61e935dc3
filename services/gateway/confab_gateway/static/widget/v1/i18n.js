// Languages: message catalogues (locales/<code>.json, English the fallback of every other),
// the visitor's language from `locale` (data-locale) or the browser, and every date,
// number, list and plural from Intl. The page can override any string.
//
// A catalogue maps a key to a text with {placeholders}, or, for counts, to plural forms
// chosen by Intl.PluralRules: {"one": "{count} new message", "other": "{count} new
// messages"} (Arabic also has zero, two, few and many). {count} is formatted for the
// language. Overrides (`strings`) are either {key: text} for every language or
// {"<language>": {key: text}} per language.

export const CATALOGUES = ['en', 'es', 'de', 'fr', 'pt', 'ar'];
const RTL = new Set(['ar', 'he', 'fa', 'ur', 'ps', 'yi', 'ckb', 'dv', 'ug', 'sd']);
const catalogues = new Map();

/** The language to speak: the first of `wanted` (then the browser's) that has a catalogue.
 *  Returns {tag, catalogue}: the tag as asked (pt-BR, for Intl) and its catalogue (pt). */
export function pickLocale(wanted, browser = navigator.languages || [navigator.language]) {
  for (const raw of [wanted, ...(browser || [])]) {
    if (!raw || typeof raw !== 'string') continue;
    let tag;
    try {
      tag = Intl.getCanonicalLocales(raw.trim())[0];
    } catch {
      continue;
    }
    const language = tag.split('-')[0].toLowerCase();
    if (CATALOGUES.includes(language)) return { tag, catalogue: language };
  }
  return { tag: 'en', catalogue: 'en' };
}

/** Fetches a catalogue once per page (they are static files beside this one). */
export function loadCatalogue(base, code) {
  const url = new URL(`locales/${code}.json`, base).href;
  if (!catalogues.has(url)) {
    const loading = fetch(url, { mode: 'cors' }).then((response) => {
      if (!response.ok) throw new Error(`${url}: ${response.status}`);
      return response.json();
    });
    loading.catch(() => catalogues.delete(url));
    catalogues.set(url, loading);
  }
  return catalogues.get(url);
}

/** An I18n for `locale` (or the browser's language) with the page's `strings` on top. */
export async function createI18n({ base, locale, strings } = {}) {
  const { tag, catalogue } = pickLocale(locale);
  const [fallback, messages] = await Promise.all([
    loadCatalogue(base, 'en'),
    catalogue === 'en' ? null : loadCatalogue(base, catalogue).catch(() => null),
  ]);
  return new I18n(messages ? tag : 'en', { ...fallback, ...(messages || {}) }, overrides(strings, tag));
}

function overrides(strings, tag) {
  if (!strings || typeof strings !== 'object') return {};
  const flat = {};
  const language = tag.split('-')[0].toLowerCase();
  for (const [key, value] of Object.entries(strings)) {
    if (typeof value === 'string' || isPlural(value)) flat[key] = value;
  }
  for (const scope of [language, tag.toLowerCase(), tag]) {
    const own = strings[scope];
    if (own && typeof own === 'object' && !isPlural(own)) Object.assign(flat, own);
  }
  return flat;
}

function isPlural(value) {
  return Boolean(value && typeof value === 'object' && typeof value.other === 'string');
}

export class I18n {
  constructor(tag, messages, overrides = {}) {
    this.locale = tag;
    this.messages = { ...messages, ...overrides };
    const language = tag.split('-')[0].toLowerCase();
    this.dir = RTL.has(language) ? 'rtl' : 'ltr';
    this.plurals = new Intl.PluralRules(tag);
    this.numbers = new Intl.NumberFormat(tag);
    this.clock = new Intl.DateTimeFormat(tag, { hour: 'numeric', minute: '2-digit' });
    this.weekday = new Intl.DateTimeFormat(tag, { weekday: 'long' });
    this.date = new Intl.DateTimeFormat(tag, { weekday: 'long', month: 'long', day: 'numeric' });
    this.fullDate = new Intl.DateTimeFormat(tag, { year: 'numeric', month: 'long', day: 'numeric' });
    this.shortDate = new Intl.DateTimeFormat(tag, { month: 'short', day: 'numeric' });
    this.stamp = new Intl.DateTimeFormat(tag, { dateStyle: 'full', timeStyle: 'short' });
    this.relative = new Intl.RelativeTimeFormat(tag, { numeric: 'auto', style: 'short' });
    this.days = new Intl.RelativeTimeFormat(tag, { numeric: 'auto' });
    this.and = new Intl.ListFormat(tag, { type: 'conjunction' });
  }

  /** The text of `key` with {placeholders} filled; plural forms by params.count. */
  t(key, params = {}) {
    let entry = this.messages[key];
    if (entry === undefined) return key;
    if (typeof entry === 'object') {
      const n = Number(params.count) || 0;
      entry = (n === 0 && entry.zero) || entry[this.plurals.select(n)] || entry.other;
    }
    return String(entry).replace(/\{(\w+)\}/g, (whole, name) => {
      if (!(name in params)) return whole;
      const value = params[name];
      return typeof value === 'number' ? this.numbers.format(value) : String(value);
    });
  }

  number(n) {
    return this.numbers.format(n);
  }

  /** "Ann, Bob and Carol" in the language's way. */
  list(items) {
    return this.and.format(items.map(String));
  }

  /** A message's time of day. */
  time(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? '' : this.clock.format(date);
  }

  /** Date and time in full, for a tooltip. */
  full(iso) {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? '' : this.stamp.format(date);
  }

  /** A day separator: Today, Yesterday, a weekday this week, else the date. */
  day(iso, now = new Date()) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return '';
    const diff = dayNumber(date) - dayNumber(now);
    if (diff === 0 || diff === -1) return capitalise(this.days.format(diff, 'day'), this.locale);
    if (diff > -7 && diff < 0) return capitalise(this.weekday.format(date), this.locale);
    const format = date.getFullYear() === now.getFullYear() ? this.date : this.fullDate;
    return capitalise(format.format(date), this.locale);
  }

  /** How long ago, for the conversation list: "now", "5 min ago", a time, a weekday, a date. */
  ago(iso, now = new Date()) {
    const date = new Date(iso);
    if (Number.isNaN(date.getTime())) return '';
    const seconds = Math.round((date.getTime() - now.getTime()) / 1000);
    if (seconds > -45) return this.relative.format(0, 'second');
    if (seconds > -3600) return this.relative.format(Math.round(seconds / 60), 'minute');
    const diff = dayNumber(date) - dayNumber(now);
    if (diff === 0) return this.clock.format(date);
    if (diff === -1) return capitalise(this.days.format(-1, 'day'), this.locale);
    if (diff > -7) return this.weekday.format(date);
    return this.shortDate.format(date);
  }

  /** Whether two times fall on the same calendar day (here). */
  sameDay(a, b) {
    return dayNumber(new Date(a)) === dayNumber(new Date(b));
  }

  /** A file size in the language's units. */
  size(bytes) {
    if (!Number.isFinite(bytes)) return '';
    const units = [
      ['byte', 1],
      ['kilobyte', 1024],
      ['megabyte', 1024 ** 2],
      ['gigabyte', 1024 ** 3],
    ];
    let [unit, scale] = units[0];
    for (const [name, size] of units) if (bytes >= size) [unit, scale] = [name, size];
    const value = bytes / scale;
    return new Intl.NumberFormat(this.locale, {
      style: 'unit',
      unit,
      unitDisplay: 'short',
      maximumFractionDigits: value < 10 && unit !== 'byte' ? 1 : 0,
    }).format(value);
  }
}

function dayNumber(date) {
  return Math.floor(
    Date.UTC(date.getFullYear(), date.getMonth(), date.getDate()) / 86_400_000,
  );
}

function capitalise(text, locale) {
  return text ? text.charAt(0).toLocaleUpperCase(locale) + text.slice(1) : text;
}
