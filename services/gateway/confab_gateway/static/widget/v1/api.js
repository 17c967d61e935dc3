// The widget REST API (/api/widget, bearer session token). Every call resolves to the
// JSON body (null for 204) or throws an ApiError; status 0 means the network failed.
// A 401 asks `renew(token)` once (the embedding page's refreshSession) and, if that
// gave a new token, sends the same request again with it.

export class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }

  get offline() {
    return this.status === 0;
  }
}

export class Api {
  constructor(base, token, renew = null) {
    this.base = base.replace(/\/+$/, '');
    this.token = token;
    this.renew = renew;
  }

  async request(method, path, options = {}) {
    const token = this.token;
    try {
      return await this.once(method, path, options, token);
    } catch (error) {
      if (error.status !== 401 || !this.renew || !(await this.renew(token))) throw error;
      return this.once(method, path, options, this.token);
    }
  }

  async once(method, path, { json, form, query } = {}, token) {
    const url = new URL(this.base + '/api/widget' + path);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null) url.searchParams.set(key, String(value));
    }
    const headers = { Authorization: `Bearer ${token}` };
    let body;
    if (json !== undefined) {
      headers['Content-Type'] = 'application/json';
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;
    }
    let response;
    try {
      response = await fetch(url, {
        method,
        headers,
        body,
        mode: 'cors',
        credentials: 'omit',
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, 'network', 'The network is unreachable.');
    }
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(
        response.status,
        error.code || 'error',
        error.message || `The server answered ${response.status}.`,
        response.headers.get('Retry-After'),
      );
    }
    return data;
  }

  me() {
    return this.request('GET', '/me');
  }

  conversations(cursor) {
    return this.request('GET', '/conversations', { query: { cursor, limit: 50 } });
  }

  conversation(id) {
    return this.request('GET', `/conversations/${enc(id)}`);
  }

  messages(id, { before, after, limit = 30 } = {}) {
    return this.request('GET', `/conversations/${enc(id)}/messages`, {
      query: { before, after, limit },
    });
  }

  events(id, after, limit = 100) {
    return this.request('GET', `/conversations/${enc(id)}/events`, { query: { after, limit } });
  }

  sendMessage(id, body) {
    return this.request('POST', `/conversations/${enc(id)}/messages`, { json: body });
  }

  edit(id, messageId, content) {
    return this.request('PATCH', `/conversations/${enc(id)}/messages/${enc(messageId)}`, {
      json: { content },
    });
  }

  remove(id, messageId) {
    return this.request('DELETE', `/conversations/${enc(id)}/messages/${enc(messageId)}`);
  }

  react(id, messageId, emoji) {
    return this.request('POST', `/conversations/${enc(id)}/messages/${enc(messageId)}/reactions`, {
      json: { emoji },
    });
  }

  unreact(id, messageId, emoji) {
    return this.request(
      'DELETE',
      `/conversations/${enc(id)}/messages/${enc(messageId)}/reactions/${enc(emoji)}`,
    );
  }

  read(id, seq, parentId) {
    const json = seq ? { seq } : {};
    if (parentId) json.parent_id = parentId; // a thread's read mark
    return this.request('POST', `/conversations/${enc(id)}/read`, { json });
  }

  pin(id, messageId, pinned) {
    const path = `/conversations/${enc(id)}/messages/${enc(messageId)}/pin`;
    return this.request(pinned ? 'POST' : 'DELETE', path);
  }

  thread(id, parentId, { before, limit = 50 } = {}) {
    return this.request('GET', `/conversations/${enc(id)}/messages/${enc(parentId)}/thread`, {
      query: { before, limit },
    });
  }

  typing(id, isTyping) {
    return this.request('POST', `/conversations/${enc(id)}/typing`, {
      json: { is_typing: isTyping },
    });
  }

  upload(id, file) {
    const form = new FormData();
    form.append('file', file, file.name);
    return this.request('POST', `/conversations/${enc(id)}/attachments`, { form });
  }

  attachment(attachmentId) {
    return this.request('GET', `/attachments/${enc(attachmentId)}`);
  }

  report(messageId, reason) {
    return this.request('POST', `/messages/${enc(messageId)}/report`, { json: { reason } });
  }

  channelAuth(socketId, channelName) {
    return this.request('POST', '/broadcasting/auth', {
      json: { socket_id: socketId, channel_name: channelName },
    });
  }
}

function enc(value) {
  return encodeURIComponent(value);
}
