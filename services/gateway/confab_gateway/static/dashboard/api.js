// The dashboard's calls: same-origin fetch with the session cookie (HttpOnly, set by the
// gateway at sign-in), the CSRF token on every change, and errors as ApiError with the
// API's message (docs/api.md's error body), ready to show.

export class ApiError extends Error {
  constructor(status, code, message, details = {}) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

export class Api {
  constructor() {
    this.csrf = '';
    this.onSignedOut = null; // called on a 401: the session ended (signed out elsewhere)
  }

  async call(method, path, body, { raw = false } = {}) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && this.csrf) headers['X-CSRF-Token'] = this.csrf;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        cache: 'no-store',
      });
    } catch {
      throw new ApiError(0, 'network', 'Cannot reach Confab. Check your connection and try again.');
    }
    if (raw && response.ok) return response;
    if (response.status === 204) return null;
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const error = (data && data.error) || {};
      const failure = new ApiError(
        response.status,
        error.code || 'error',
        error.message || `The request failed (HTTP ${response.status}).`,
        error.details || {},
      );
      if (response.status === 401 && this.onSignedOut) this.onSignedOut(failure);
      throw failure;
    }
    return data;
  }

  get(path, params) {
    const query = params ? new URLSearchParams(clean(params)).toString() : '';
    return this.call('GET', query ? `${path}?${query}` : path);
  }

  post(path, body) {
    return this.call('POST', path, body);
  }

  patch(path, body) {
    return this.call('PATCH', path, body);
  }

  delete(path) {
    return this.call('DELETE', path);
  }
}

function clean(params) {
  return Object.fromEntries(
    Object.entries(params).filter(([, v]) => v !== undefined && v !== null && v !== ''),
  );
}
