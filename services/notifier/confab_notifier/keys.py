"""The deployment's own keys, in the notifier's KV bucket ``NOTIFIER``: made by the first
process that needs one, then read by every copy (``deployment_secret``).

- ``unsubscribe-key``: signs unsubscribe links (``mail.Tokens``);
- ``vapid-key``: the VAPID key pair browsers' push subscriptions are bound to (``push``);
- ``credentials-key``: seals the workspaces' FCM and APNs credentials, and invitation
  emails' links and addresses (``invitations``), before they are appended to the log
  (``Sealer``: AES-256-GCM, each use with its own associated data), so the log holds
  only ciphertext.

Losing the bucket loses these: unsubscribe links and push subscriptions made before stop
working, and sealed credentials must be given again.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nats.js import JetStreamContext
from nats.js.api import KeyValueConfig
from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

BUCKET = "NOTIFIER"
CREDENTIALS_KEY = "credentials-key"
PREFIX = "v1."
CREDENTIALS = b"confab.notifier.credentials"


async def bucket(js: JetStreamContext, replicas: int = 1) -> KeyValue:
    try:
        return await js.key_value(BUCKET)
    except BucketNotFoundError:
        return await js.create_key_value(KeyValueConfig(bucket=BUCKET, replicas=replicas))


async def deployment_secret(kv: KeyValue, name: str, make: bytes) -> bytes:
    """The value of ``name`` in the bucket, ``make`` stored first if there is none (the
    first process to start wins; the others read what it stored)."""
    for _ in range(3):
        try:
            await kv.create(name, make)
            return make
        except KeyWrongLastSequenceError:
            pass
        try:
            entry = await kv.get(name)
        except KeyNotFoundError:
            continue  # deleted in between: make it again
        assert entry.value is not None
        return entry.value
    raise RuntimeError(f"could not read or make the deployment key {name!r}")


class Sealer:
    def __init__(self, key: bytes) -> None:
        self.aes = AESGCM(key)

    @classmethod
    async def open(cls, kv: KeyValue) -> Sealer:
        return cls(await deployment_secret(kv, CREDENTIALS_KEY, AESGCM.generate_key(256)))

    def seal(self, plain: bytes, context: bytes = CREDENTIALS) -> str:
        nonce = os.urandom(12)
        sealed = nonce + self.aes.encrypt(nonce, plain, context)
        return PREFIX + base64.urlsafe_b64encode(sealed).decode()

    def open_sealed(self, text: str, context: bytes = CREDENTIALS) -> bytes | None:
        """The plain bytes; None if ``text`` was not sealed with this deployment's key
        and this ``context`` (what it was sealed for: one use's ciphertext is not
        another's)."""
        if not text.startswith(PREFIX):
            return None
        try:
            raw = base64.urlsafe_b64decode(text[len(PREFIX) :])
            return self.aes.decrypt(raw[:12], raw[12:], context)
        except (InvalidTag, ValueError):
            return None
