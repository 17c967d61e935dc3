"""The base of every stored event, and the registry the log's readers decode by.

An ``Event`` subclass names its ``type`` (``"message.posted"``) and ``schema``
(its integer version, default 1); defining the class registers it in
``EVENT_TYPES``, which ``confab.events.decode_event`` looks types up in.
Importing ``confab.contracts.events`` imports every event module, so every
type is known wherever events are read.
"""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec


class Event(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A past-tense fact stored in a JetStream stream.

    Subclasses set ``type`` (e.g. ``"workspace.created"``) and ``schema`` (its
    integer version). Registering happens on subclassing, so importing an
    events module is enough for ``decode`` to know its events.
    """

    type: ClassVar[str]
    schema: ClassVar[int] = 1
    # Personal data (see confab.personal): these fields are sealed with the key of the
    # user named by the field ``owner``; such a class also has ``sealed: str | None``.
    personal: ClassVar[tuple[str, ...]] = ()
    owner: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "type" in cls.__dict__:
            existing = EVENT_TYPES.get(cls.type)
            if existing is not None and existing.__qualname__ != cls.__qualname__:
                raise TypeError(f"event type {cls.type!r} defined twice")
            EVENT_TYPES[cls.type] = cls


EVENT_TYPES: dict[str, type[Event]] = {}
