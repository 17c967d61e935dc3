"""The stored events: the contract with the event log, kept forever.

Every event ever appended stays in the log (``max_msgs_per_subject = -1``) and
is read again by every replay, rebuild, export and new projection, by builds
that do not exist yet. So what is here only grows:

- a field may be added with a default; none is removed, renamed or retyped;
- a change that old readers could not follow is a new ``schema`` version of
  the type, with an upcaster from the one before (``confab.events.upcaster``);
  the log itself is never rewritten;
- a type is never reused for another meaning, nor a subject layout changed.

One module per stream: ``identity`` (``IDENTITY``), ``messaging``
(``CONVERSATIONS``), ``media`` (``MEDIA``), ``webhooks`` (``WEBHOOKS``),
``notifier`` (``NOTIFIER``), each with its subjects (``subject``) and the types its
events are made of.
Requests, replies and request bodies live beside, in ``confab.contracts``, and
may change with the API. ``docs/events.md`` lists every type and its fields.

Importing this package imports every events module, so every type is
registered for decoding wherever events are read.
"""

from confab.contracts.events import identity, media, messaging, moderation, notifier, webhooks
from confab.contracts.events.base import EVENT_TYPES, Event

__all__ = [
    "EVENT_TYPES",
    "Event",
    "identity",
    "media",
    "messaging",
    "moderation",
    "notifier",
    "webhooks",
]
