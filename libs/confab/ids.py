"""Identifiers and secrets.

IDs are time-ordered and safe as NATS subject tokens (no ``.``, ``*``, ``>`` or
spaces). Every id that comes from a request is checked with ``is_valid_id``
before it goes into a subject. Secrets are random, shown once, and kept only
as SHA-256 hashes next to a short lookup prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time

_CROCKFORD = "0123456789abcdefghjkmnpqrstvwxyz"
_VALID_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SECRET_PREFIX_LENGTH = 15  # "sk_" + 12 characters: the public part used to find the row


def new_id(prefix: str) -> str:
    """``<prefix>_`` + 26 characters: 48 bits of milliseconds, 80 random bits (a ULID)."""
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        value, digit = divmod(value, 32)
        chars.append(_CROCKFORD[digit])
    return f"{prefix}_{''.join(reversed(chars))}"


def is_valid_id(value: str) -> bool:
    return bool(_VALID_ID.match(value))


def new_secret(kind: str) -> str:
    """A high-entropy credential such as ``sk_…`` (API key) or ``st_…`` (session token)."""
    return f"{kind}_{secrets.token_urlsafe(32)}"


def secret_prefix(secret: str) -> str:
    return secret[:SECRET_PREFIX_LENGTH]


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same_secret(stored_hash: str, presented_hash: str) -> bool:
    """Constant-time comparison, so timing says nothing about how much matched."""
    return hmac.compare_digest(stored_hash.encode(), presented_hash.encode())


def numeric_app_id(workspace_id: str) -> str:
    """A stable all-digit alias of a workspace id, its Pusher ``app_id``.

    pusher-http-python only accepts digits as ``app_id``; workspaces have ids like
    ``ws_01J…``. The fanout's HTTP API accepts either in its paths; tenants are
    shown this one (``pusher_app_id``) for their server SDK.
    """
    digest = hashlib.sha256(b"confab-pusher-app:" + workspace_id.encode()).digest()
    return str(int.from_bytes(digest[:6], "big"))
