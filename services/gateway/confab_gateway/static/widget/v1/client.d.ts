// Types of the headless Confab client (client.js) and the widget's mount (widget.js).

export interface Sender {
  id: string;
  name: string;
  avatar_url?: string | null;
}

export interface Participant {
  id: string;
  name: string;
  avatar_url?: string | null;
  last_read_seq?: number;
}

export interface Attachment {
  id: string;
  filename: string;
  content_type: string;
  size: number;
  width?: number | null;
  height?: number | null;
  /** Presigned, per reader, expiring; absent in real-time events (ask attachment(id)). */
  url?: string | null;
  thumbnail_url?: string | null;
  /** When the URLs stop working (ms since the epoch, this browser's clock). */
  expiresAt?: number;
}

export interface ReactionSummary {
  count: number;
  me: boolean;
}

export interface Message {
  id: string;
  conversation_id: string;
  /** null for a local copy not stored yet. */
  seq: number | null;
  /** null for a system message. */
  sender: Sender | null;
  content: string;
  attachments: Attachment[];
  reply_to?: string | null;
  metadata: Record<string, unknown>;
  reactions: Record<string, ReactionSummary>;
  created_at: string;
  edited_at: string | null;
  deleted: boolean;
  client_msg_id?: string | null;
  /** People mentioned: text[start, end) in Unicode code points names user_id. */
  mentions?: Mention[];
  /** A reply in the thread of this top-level message. */
  parent_id?: string | null;
  /** A top-level message's thread, once it has replies. */
  thread?: { reply_count: number; last_reply_id: string | null; last_reply_at: string | null; participants: string[] } | null;
  pinned_at?: string | null;
  pinned_by?: string | null;
  /** The preview of the message's first link (arrives as a message.updated). */
  link_preview?: {
    url: string;
    final_url: string | null;
    title: string | null;
    description: string | null;
    site_name: string | null;
    image: Attachment | null;
  } | null;
}

export interface Mention {
  user_id: string;
  start: number;
  end: number;
}

/** Your message as sent, until the stored one replaces it (id "local:<client_msg_id>"). */
export interface LocalMessage extends Message {
  local: true;
  status: 'sending' | 'queued' | 'failed';
  /** Why it was not sent (status "failed"), or the network error (status "queued"). */
  error: ApiError | null;
}

export interface Conversation {
  id: string;
  type: 'direct' | 'group' | string;
  title: string | null;
  metadata: Record<string, unknown>;
  participants: Participant[];
  last_message: Message | null;
  unread_count: number;
  last_seq: number;
  created_at: string;
  last_activity_at: string;
}

export interface ThreadState {
  loaded: boolean;
  loading: boolean;
  error: ApiError | null;
  hasMore: boolean;
  loadingOlder: boolean;
}

export type ConnectionState =
  | 'connecting'
  | 'live'
  | 'reconnecting'
  | 'offline'
  | 'unavailable'
  | 'ended';

export interface Member {
  id: string;
  name?: string;
  avatar_url?: string | null;
}

export interface ClientEvents {
  /** The socket's state changed. */
  connection: { state: ConnectionState };
  /** The session was renewed, or is over (until setSession). */
  session: { state: 'refreshed' | 'expired' };
  /** The list changed (a conversation added, the order); `error` if it could not load. */
  conversations: { error?: ApiError };
  /** A conversation's summary changed (last message, unread count, read marks). */
  conversation: { conversationId: string };
  /** A thread's messages: loading, loaded, failed, an older page. */
  messages: {
    conversationId: string;
    reason: 'loading' | 'loaded' | 'failed' | 'loading-older' | 'older' | 'older-failed';
    error?: ApiError;
    added?: Message[];
  };
  /** A message was added or changed (edits, reactions, deletion as a tombstone); a local
   *  copy changed state, or the stored message `replaces` it ("local:…"). */
  message: {
    conversationId: string;
    message: Message | LocalMessage;
    replaces: string | null;
    previous?: Message | LocalMessage;
  };
  /** Who is typing now. */
  typing: { conversationId: string; users: { id: string; name: string }[] };
  /** Someone (you, in another tab, too) read up to `seq`. */
  read: { conversationId: string; userId: string; seq: number };
  /** Who is online in a conversation you watch (watchPresence). */
  presence: { conversationId: string; members: Member[] };
}

export interface ClientOptions {
  sessionToken: string;
  /** Called on a 401 and a minute before sessionExpiresAt: resolve to a new token. */
  refreshSession?: () => Promise<string | { token: string; expiresAt?: string | number }>;
  /** When the session ends (ISO time or ms), to renew it before. */
  sessionExpiresAt?: string | number;
  /** The gateway; defaults to where client.js was served from (pass it when bundled). */
  apiUrl?: string;
  /** Where pusher-js is loaded from; defaults to `${apiUrl}/widget/v1/`. */
  assetsUrl?: string;
  /** Your own pusher-js constructor (npm's pusher-js 8), instead of loading one. */
  Pusher?: unknown;
}

export declare const MAX_CONTENT: number;

export declare class ApiError extends Error {
  status: number;
  code: string;
  retryAfter: string | null;
  readonly offline: boolean;
}

export declare class ConfabClient extends EventTarget {
  constructor(options: ClientOptions);
  readonly user: Sender | null;
  readonly connection: ConnectionState;
  readonly conversations: Conversation[];
  readonly listLoaded: boolean;
  readonly listError: ApiError | null;
  readonly unreadTotal: number;

  /** Calls handler(detail) for each event of that type; returns a function that stops it. */
  on<K extends keyof ClientEvents>(type: K, handler: (detail: ClientEvents[K]) => void): () => void;
  start(): Promise<this>;
  destroy(): void;
  setSession(token: string, expiresAt?: string | number): void;
  renewSession(): Promise<boolean>;

  conversation(id: string): Conversation | null;
  refreshList(): Promise<void>;
  open(id: string): Promise<Conversation | null>;
  thread(id: string): ThreadState;
  messages(id: string): (Message | LocalMessage)[];
  message(id: string, messageId: string): Message | LocalMessage | null;
  loadOlder(id: string): Promise<boolean>;
  readers(id: string, seq: number): Participant[];

  send(
    id: string,
    message: {
      content?: string;
      attachments?: Attachment[];
      metadata?: Record<string, unknown>;
      mentions?: Mention[];
    },
  ): LocalMessage;
  retry(id: string, localId: string): void;
  discard(id: string, localId: string): void;
  edit(id: string, messageId: string, content: string): Promise<void>;
  remove(id: string, messageId: string): Promise<void>;
  toggleReaction(id: string, messageId: string, emoji: string): Promise<void>;
  report(messageId: string, reason: string): Promise<unknown>;
  markRead(id: string, seq: number): Promise<void>;

  typing(id: string): void;
  stopTypingSignal(id: string): void;
  typingUsers(id: string): { id: string; name: string }[];

  watchPresence(id: string): void;
  unwatchPresence(id: string): void;
  members(id: string): Member[] | null;

  upload(id: string, file: File): Promise<Attachment>;
  /** Fresh URLs; a failed ask is made again after 1 s and 3 s (not after a 401 or 403). */
  attachment(attachmentId: string): Promise<Attachment>;
}

export declare function createClient(options: ClientOptions): ConfabClient;
export declare function urlExpiry(url: string, fetchedAt?: number): number;
export declare function codePoints(text: string): number;
export declare function randomId(): string;

export interface WidgetOptions extends Omit<ClientOptions, 'assetsUrl' | 'Pusher'> {
  /** Open this conversation at once. */
  conversationId?: string;
  open?: boolean;
  title?: string;
  /** The accent, any CSS colour. */
  color?: string;
  /** en, es, de, fr, pt, ar (or a tag such as pt-BR); default: the browser's language. */
  locale?: string;
  /** Your own words for any text: { key: text } or { "es": { key: text } }. */
  strings?: Record<string, string | Record<string, unknown>>;
  /** Show the unread count in the page's title. */
  unreadInTitle?: boolean;
  /** Your site's one-line service worker (importScripts of /widget/v1/push-worker.js):
   *  with it, the settings offer "Notify me in this browser". */
  pushWorker?: string;
  /** Draw the panel inline in this element instead of a launcher in the corner. */
  container?: HTMLElement;
}

export interface Widget {
  open(): void;
  close(): void;
  openConversation(id: string): Promise<void>;
  setSession(token: string, expiresAt?: string | number): void;
  destroy(): void;
  readonly client: ConfabClient;
  readonly ready: Promise<void>;
  readonly state: ConnectionState;
}
