// The reactions the picker offers: [emoji, catalogue key of its name]. The first six are
// the quick reactions of a message's menu.
export const EMOJI = [
  ['👍', 'emoji.thumbsUp'],
  ['❤️', 'emoji.heart'],
  ['😂', 'emoji.joy'],
  ['😮', 'emoji.surprised'],
  ['😢', 'emoji.crying'],
  ['🙏', 'emoji.foldedHands'],
  ['🎉', 'emoji.party'],
  ['🔥', 'emoji.fire'],
  ['👏', 'emoji.clap'],
  ['😄', 'emoji.grin'],
  ['🤔', 'emoji.thinking'],
  ['👀', 'emoji.eyes'],
  ['✅', 'emoji.check'],
  ['🚀', 'emoji.rocket'],
  ['💯', 'emoji.hundred'],
  ['👋', 'emoji.wave'],
  ['😍', 'emoji.heartEyes'],
  ['🙌', 'emoji.raisedHands'],
  ['😎', 'emoji.sunglasses'],
  ['🤝', 'emoji.handshake'],
  ['💡', 'emoji.bulb'],
  ['⭐', 'emoji.star'],
  ['😅', 'emoji.sweatSmile'],
  ['👎', 'emoji.thumbsDown'],
];

export const QUICK = EMOJI.slice(0, 6);

/** The catalogue key naming `emoji`, or null for one the picker does not offer. */
export function emojiKey(emoji) {
  const found = EMOJI.find(([e]) => e === emoji);
  return found ? found[1] : null;
}
