"""Contracts between services, as msgspec Structs, in two kinds that age differently.

- ``confab.contracts.events``: the stored events, the contract with the event log,
  kept forever (fields only added, old versions upcast on read, never rewritten).
- The modules here (``identity``, ``messaging``, ``media``, ``webhooks``,
  ``fanout``, ``system``): RPC requests, replies and request bodies, the contract
  between the services and with the public API, which may change with it.

One definition each; services import these, never each other. Importing any
contract module imports every events module, so every event type is registered
for decoding wherever events are read.
"""

from confab.contracts import events, fanout, identity, media, messaging, system, webhooks

__all__ = ["events", "fanout", "identity", "media", "messaging", "system", "webhooks"]
