"""Contracts between services: events, RPC requests and replies, as msgspec Structs.

One definition each; services import these, never each other. Importing any
contract module imports them all, so every event type is registered for
decoding wherever events are read.
"""

from confab.contracts import fanout, identity, media, messaging, system, webhooks

__all__ = ["fanout", "identity", "media", "messaging", "system", "webhooks"]
