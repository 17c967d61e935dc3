// A message's link preview card: what the server fetched for its first link (Open Graph /
// oEmbed, api: "link_preview"), drawn safely.
//
// - The card links to the URL only if links.js accepts it (http, https); it opens in a
//   new tab with rel="noopener noreferrer nofollow" and no referrer.
// - Title, site and description are text nodes (dom.js). The image is the one media
//   re-encoded and stored; real-time frames carry it without URLs (they are per reader
//   and expire), so the card asks for fresh ones (`fresh(image)`) and shows it when they
//   come. The image is decorative (alt ""): the title says what the card is.

import { h, safeUrl } from './dom.js';
import { safeLink } from './links.js';

/** The card of `preview`, or null if it has nothing safe to show. */
export function previewCard(preview, { t, fresh }) {
  if (!preview || typeof preview !== 'object') return null;
  const href = safeLink(preview.final_url || preview.url);
  if (!href || !(preview.title || preview.description)) return null;
  // Its accessible name is its visible text (site, title, description); the tooltip
  // says it is a link preview.
  const card = h('a', {
    class: 'cw-preview',
    href,
    target: '_blank',
    rel: 'noopener noreferrer nofollow',
    referrerpolicy: 'no-referrer',
    'data-testid': 'link-preview',
    title: t('preview.label', { title: preview.title || href }),
  });
  const image = preview.image;
  if (image && image.id) {
    const img = h('img', {
      class: 'cw-preview-image',
      alt: '',
      loading: 'lazy',
      width: image.width || null,
      height: image.height || null,
      'data-testid': 'link-preview-image',
    });
    const show = (found) => {
      const src = found && (safeUrl(found.thumbnail_url) || safeUrl(found.url));
      if (src) img.src = src;
      else img.remove();
    };
    if (image.url || image.thumbnail_url) show(image);
    else if (fresh) fresh(image).then(show, () => img.remove());
    card.append(img);
  }
  card.append(
    h(
      'span',
      { class: 'cw-preview-text' },
      preview.site_name ? h('span', { class: 'cw-preview-site', text: preview.site_name }) : null,
      preview.title ? h('strong', { class: 'cw-preview-title', text: preview.title }) : null,
      preview.description
        ? h('span', { class: 'cw-preview-description', text: preview.description })
        : null,
    ),
  );
  return card;
}
