"""The decider: one kind of aggregate as three pure parts, the same in every service.

After Jérémie Chassaing's decider and Equinox's ``Decider``:

- ``initial()`` is the state of an aggregate before its first event;
- ``evolve(state, event) -> state`` folds one stored event into the state;
- ``decide(command, state) -> Decision(result, events)`` says what a command
  does: the events to append (none, one, or several, in order) and a result
  for the caller beside them (the id of the message a resend names, the user
  who may type), or it raises a typed ``ConfabError``.

A command is a typed value that carries everything the decision needs: the
acting party, ids and secrets made up front, ``now``, and what the handler
looked up in read models before deciding (does a user exist, which
attachments media stored). Deciders do no I/O, read no clock and draw no
random numbers, so they are tested by folding and deciding plain values.

``stored(state, event, seq)``, if a decider has it, is told the stream
sequence each folded event was stored at, after ``evolve``; a decider whose
answers must name where something was stored (messaging answers a resent
post with its original) keeps it there. ``evolve`` never needs it.

``confab.aggregate`` runs a decider against the event log.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgspec

from confab.contracts.events import Event

C = TypeVar("C")  # the decider's command type (usually a union)
S = TypeVar("S")  # its state
R = TypeVar("R")  # a decision's result


class Decision(msgspec.Struct, Generic[R], frozen=True):
    """What a command does: ``events`` to append, in order, and a ``result`` beside them."""

    result: R
    events: Sequence[Event] = ()


NOTHING: Decision[None] = Decision(None)  # changes nothing, says nothing


def emit(*events: Event) -> Decision[None]:
    """A decision of these events and no result."""
    return Decision(None, events)


@dataclass(frozen=True, slots=True)
class Decider(Generic[C, S]):
    """One kind of aggregate: its initial state, its fold, and its decisions."""

    initial: Callable[[], S]
    evolve: Callable[[S, Event], S]
    decide: Callable[[C, S], Decision[Any]]
    stored: Callable[[S, Event, int], None] | None = None

    def fold(self, events: Sequence[Event], state: S | None = None) -> S:
        """``events`` folded into ``state`` (default: the initial one)."""
        current = self.initial() if state is None else state
        for event in events:
            current = self.evolve(current, event)
        return current
