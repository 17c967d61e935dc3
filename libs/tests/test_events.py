from typing import Any

import msgspec
import pytest

from confab.contracts.events import Event
from confab.events import (
    H_ACTOR,
    H_CORRELATION,
    H_EVENT,
    H_MSG_ID,
    H_SCHEMA,
    H_WORKSPACE,
    UnknownEvent,
    decode_event,
    encode,
    headers_for,
    open_envelope,
    upcaster,
)


class Renamed(Event, kw_only=True, frozen=True):
    """Version 3 of a test event whose fields changed twice."""

    type = "test.renamed"
    schema = 3

    display_name: str
    locale: str


@upcaster("test.renamed", 1)
def _v1_to_v2(body: dict[str, Any]) -> dict[str, Any]:
    return {"display_name": body.pop("name")}


@upcaster("test.renamed", 2)
def _v2_to_v3(body: dict[str, Any]) -> dict[str, Any]:
    return {**body, "locale": "en"}


def test_headers_carry_the_envelope() -> None:
    event = Renamed(display_name="Ann", locale="fr")
    headers = headers_for(event, msg_id="m1", workspace="w1", actor="u1", correlation="c1")
    assert headers == {
        H_MSG_ID: "m1",
        H_EVENT: "test.renamed",
        H_SCHEMA: "3",
        H_WORKSPACE: "w1",
        H_ACTOR: "u1",
        H_CORRELATION: "c1",
    }
    envelope = open_envelope(headers, encode(event), subject="s", seq=7)
    assert envelope.event == event
    assert (envelope.workspace, envelope.actor, envelope.seq) == ("w1", "u1", 7)


def test_old_versions_are_upcast_step_by_step() -> None:
    assert decode_event("test.renamed", 1, b'{"name": "Ann"}') == Renamed(
        display_name="Ann", locale="en"
    )
    assert decode_event("test.renamed", 2, b'{"display_name": "Bo"}') == Renamed(
        display_name="Bo", locale="en"
    )


def test_unknown_and_future_events_are_refused_clearly() -> None:
    with pytest.raises(UnknownEvent):
        decode_event("test.never_defined", 1, b"{}")
    with pytest.raises(UnknownEvent, match="newer"):
        decode_event("test.renamed", 4, b"{}")


def test_an_upcaster_cannot_be_registered_twice() -> None:
    with pytest.raises(ValueError):
        upcaster("test.renamed", 1)(_v1_to_v2)


def test_a_body_that_does_not_fit_the_type_fails_validation() -> None:
    with pytest.raises(msgspec.ValidationError):
        decode_event("test.renamed", 3, b'{"display_name": 5, "locale": "en"}')
