// Links in message text, found by linkify-it (vendored from npm) rather than a regex of
// our own. The safe rendering rule:
// - the text is split into parts; every part becomes a text node (never markup);
// - a part is a link only if the URL linkify-it normalised parses (URL API) with the
//   scheme http:, https: or mailto: — anything else (javascript:, data:, ftp:, //host)
//   stays text;
// - the href is that parsed URL; the link's text is what was written;
// - links open in a new tab with rel="noopener noreferrer nofollow" and no referrer.

import { LinkifyIt } from './vendor/linkify-it-6.1.0.mjs';

const SCHEMES = new Set(['http:', 'https:', 'mailto:']);
const linkify = new LinkifyIt({ fuzzyLink: true, fuzzyEmail: true, fuzzyIP: false })
  .add('ftp:', null)
  .add('//', null);

/** The parts of `text`: [{text}] and [{text, href}] in order. */
export function linkParts(text) {
  const source = String(text || '');
  if (!source || !linkify.test(source)) return [{ text: source }];
  const parts = [];
  let at = 0;
  for (const match of linkify.match(source) || []) {
    const href = safeLink(match.url);
    if (!href) continue;
    if (match.index > at) parts.push({ text: source.slice(at, match.index) });
    parts.push({ text: source.slice(match.index, match.lastIndex), href });
    at = match.lastIndex;
  }
  if (at < source.length) parts.push({ text: source.slice(at) });
  return parts;
}

/** `url` as an href if it is http(s) or mailto, else null. */
export function safeLink(url) {
  try {
    const parsed = new URL(url);
    return SCHEMES.has(parsed.protocol) ? parsed.href : null;
  } catch {
    return null;
  }
}
