"""Pusher's HMAC-SHA256 signatures: channel auth, user sign-in, HTTP API requests, webhooks.

Pure functions; every comparison is constant-time. The strings signed are
exactly Pusher's (see the protocol reference, "Private and presence auth",
"User authentication" and "Request signing").
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

from confab.realtime import channel_auth, channel_string, sign, user_auth, user_string

AUTH_VERSION = "1.0"
TIMESTAMP_TOLERANCE = 600  # seconds either side, as Pusher


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


# -- sockets ---------------------------------------------------------------------------


def check_channel_auth(
    key: str,
    secret: str,
    socket_id: str,
    channel: str,
    auth: str,
    channel_data: str | None = None,
) -> bool:
    """Whole ``key:hex`` compared, so an auth for another app's key fails too."""
    return _same(auth, channel_auth(key, secret, socket_id, channel, channel_data))


def check_user_auth(key: str, secret: str, socket_id: str, user_data: str, auth: str) -> bool:
    return _same(auth, user_auth(key, secret, socket_id, user_data))


# -- HTTP API ----------------------------------------------------------------------------


def request_string(method: str, path: str, params: Mapping[str, str]) -> str:
    """``METHOD\\npath\\nk=v&…``: keys lowercased and sorted, ``auth_signature`` left out,
    values not URL-escaped."""
    pairs = sorted((k.lower(), v) for k, v in params.items() if k.lower() != "auth_signature")
    query = "&".join(f"{k}={v}" for k, v in pairs)
    return f"{method.upper()}\n{path}\n{query}"


def body_md5(body: bytes) -> str:
    return hashlib.md5(body).hexdigest()


def sign_request(
    key: str,
    secret: str,
    method: str,
    path: str,
    params: Mapping[str, str] | None = None,
    body: bytes = b"",
    timestamp: int | None = None,
) -> dict[str, str]:
    """The query parameters of a signed request (what the server SDKs send)."""
    query = dict(params or {})
    query.update(
        auth_key=key,
        auth_timestamp=str(int(time.time()) if timestamp is None else timestamp),
        auth_version=AUTH_VERSION,
    )
    if body:
        query["body_md5"] = body_md5(body)
    query["auth_signature"] = sign(secret, request_string(method, path, query))
    return query


def check_request(
    secret: str,
    method: str,
    path: str,
    params: Mapping[str, str],
    body: bytes,
    now: float | None = None,
) -> str | None:
    """Why a signed HTTP API request is refused, or None if it is good.

    ``body_md5`` must match the body when the body is non-empty or the client
    sent it (pusher-http-python sends it on GETs too), and is then part of the
    signed string like any other parameter.
    """
    signature = params.get("auth_signature")
    if not signature:
        return "Missing auth_signature"
    if params.get("auth_version", AUTH_VERSION) != AUTH_VERSION:
        return "Unsupported auth_version"
    try:
        timestamp = int(params.get("auth_timestamp", ""))
    except ValueError:
        return "Missing or invalid auth_timestamp"
    current = time.time() if now is None else now
    if abs(current - timestamp) > TIMESTAMP_TOLERANCE:
        return "Timestamp expired: given auth_timestamp is not within 600 s of server time"
    md5 = params.get("body_md5")
    if (body or md5 is not None) and not _same(md5 or "", body_md5(body)):
        return "Invalid body_md5"
    if not _same(signature, sign(secret, request_string(method, path, params))):
        return "Invalid signature"
    return None


# -- webhooks ----------------------------------------------------------------------------


def webhook_headers(key: str, secret: str, body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Pusher-Key": key,
        "X-Pusher-Signature": sign(secret, body),
    }


__all__ = [
    "channel_auth",
    "channel_string",
    "check_channel_auth",
    "check_request",
    "check_user_auth",
    "sign",
    "sign_request",
    "user_auth",
    "user_string",
    "webhook_headers",
]
