// The reactions the picker offers: [emoji, accessible name].
export const EMOJI = [
  ['👍', 'thumbs up'],
  ['❤️', 'red heart'],
  ['😂', 'face with tears of joy'],
  ['😮', 'surprised face'],
  ['😢', 'crying face'],
  ['🙏', 'folded hands'],
  ['🎉', 'party popper'],
  ['🔥', 'fire'],
  ['👏', 'clapping hands'],
  ['😄', 'grinning face'],
  ['🤔', 'thinking face'],
  ['👀', 'eyes'],
  ['✅', 'check mark'],
  ['🚀', 'rocket'],
  ['💯', 'hundred points'],
  ['👋', 'waving hand'],
  ['😍', 'smiling face with heart eyes'],
  ['🙌', 'raising hands'],
  ['😎', 'smiling face with sunglasses'],
  ['🤝', 'handshake'],
  ['💡', 'light bulb'],
  ['⭐', 'star'],
  ['😅', 'grinning face with sweat'],
  ['👎', 'thumbs down'],
];

export function emojiName(emoji) {
  const found = EMOJI.find(([e]) => e === emoji);
  return found ? found[1] : emoji;
}
