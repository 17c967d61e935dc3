"""The endpoint decider, and the rules of delivery: which events an endpoint gets, when to
try again, what an answer means. Pure: no I/O, no clock (``now`` comes in); the decider
draws no random numbers either (``new_secret`` is called by the handler, before deciding).

Each endpoint (one subject of ``WEBHOOKS``) is an aggregate: ``webhook.created`` once,
then changes, perhaps ``webhook.deleted``. The decider (``confab.decider``, ``DECIDER``):
``decide(command, state) -> Decision`` over the commands ``CreateWebhook``,
``UpdateWebhook``, ``RotateWebhookSecret``, ``DisableWebhook`` and ``DeleteWebhook``,
each a typed value carrying what it needs (``now``, the new endpoint's id and secret,
the workspace's count of endpoints); each appends at most one event, nothing when it
would not change the endpoint, or raises a typed error. Another workspace's endpoint is
"not found".

Secrets: an endpoint signs with its current secret and, after a rotation, with the one
before until the overlap ends; Standard Webhooks receivers accept a delivery if any of
the signatures in ``webhook-signature`` verifies, so a receiver that has not switched
yet keeps working.
"""

from __future__ import annotations

import base64
import random
import secrets
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

import msgspec

from confab.contracts.events import Event
from confab.contracts.events.webhooks import (
    WebhookCreated,
    WebhookDeleted,
    WebhookDisabled,
    WebhookSecretRotated,
    WebhookUpdated,
)
from confab.contracts.webhooks import (
    MAX_ENDPOINTS,
    Webhook,
    WebhookInput,
    WebhookPatch,
    unknown_patterns,
)
from confab.decider import NOTHING, Decider, Decision, emit
from confab.errors import Conflict, InvalidRequest, NotFound

NOT_FOUND = "No webhook with that id."

# -- the aggregate ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Secret:
    value: str
    expires_at: datetime | None = None  # None: the current one


@dataclass(frozen=True, slots=True)
class EndpointState:
    id: str
    workspace_id: str
    url: str
    event_types: tuple[str, ...]
    enabled: bool
    description: str
    secrets: tuple[Secret, ...]  # the current one first
    created_at: datetime
    updated_at: datetime
    disabled_reason: str | None = None
    deleted: bool = False


State = EndpointState | None


def initial() -> State:
    return None


def evolve(state: State, event: Event) -> State:
    match event:
        case WebhookCreated():
            return EndpointState(
                id=event.endpoint_id,
                workspace_id=event.workspace_id,
                url=event.url,
                event_types=tuple(event.event_types),
                enabled=event.enabled,
                description=event.description,
                secrets=(Secret(event.secret),),
                created_at=event.at,
                updated_at=event.at,
            )
        case WebhookUpdated() if state is not None:
            return replace(
                state,
                url=event.url,
                event_types=tuple(event.event_types),
                enabled=event.enabled,
                description=event.description,
                disabled_reason=None if event.enabled else state.disabled_reason,
                updated_at=event.at,
            )
        case WebhookSecretRotated() if state is not None:
            previous = Secret(state.secrets[0].value, event.previous_expires_at)
            return replace(state, secrets=(Secret(event.secret), previous), updated_at=event.at)
        case WebhookDisabled() if state is not None:
            return replace(state, enabled=False, disabled_reason=event.reason, updated_at=event.at)
        case WebhookDeleted() if state is not None:
            return replace(state, deleted=True, updated_at=event.at)
    return state


def new_secret() -> str:
    """``whsec_`` and 32 random bytes in base64: the form Standard Webhooks libraries take."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def check_patterns(patterns: list[str]) -> None:
    unknown = unknown_patterns(patterns)
    if unknown:
        raise InvalidRequest(
            f"No event type matches {unknown[0]!r}.",
            {"event_types": "each pattern must match an event type (see docs/webhooks.md)"},
        )


def live(state: State, workspace_id: str) -> EndpointState:
    """The workspace's endpoint, or NotFound (unknown, another workspace's, deleted)."""
    if state is None or state.workspace_id != workspace_id or state.deleted:
        raise NotFound(NOT_FOUND)
    return state


# -- the commands ----------------------------------------------------------------------------


class Command(msgspec.Struct, kw_only=True, frozen=True):
    """What every endpoint command carries: the workspace it acts in, and when."""

    workspace_id: str
    now: datetime


class CreateWebhook(Command, kw_only=True, frozen=True):
    """A new endpoint, with its id and first secret made up front, and how many endpoints
    the workspace has (the read model's count: the limit is a guard, not a promise)."""

    endpoint_id: str
    given: WebhookInput
    secret: str
    existing: int


class UpdateWebhook(Command, kw_only=True, frozen=True):
    """Change what ``patch`` gives; fields left out stay as they are."""

    patch: WebhookPatch


class RotateWebhookSecret(Command, kw_only=True, frozen=True):
    """Sign with ``secret`` from now on, and with the current one for ``overlap`` more."""

    secret: str
    overlap: timedelta


class DisableWebhook(Command, kw_only=True, frozen=True):
    """The delivery side stops delivering (a 410 answer, or failing for days)."""

    reason: str


class DeleteWebhook(Command, kw_only=True, frozen=True):
    pass


def decide(command: Command, state: State) -> Decision[None]:
    """What ``command`` does to the endpoint in ``state``."""
    match command:
        case CreateWebhook():
            return emit(_create(command, state))
        case UpdateWebhook():
            return _update(command, state)
        case RotateWebhookSecret():
            current = live(state, command.workspace_id)
            return emit(
                WebhookSecretRotated(
                    workspace_id=command.workspace_id,
                    endpoint_id=current.id,
                    secret=command.secret,
                    previous_expires_at=command.now + command.overlap,
                    at=command.now,
                )
            )
        case DisableWebhook():
            # Nothing if it is gone, another workspace's, or disabled already.
            if (
                state is None
                or state.deleted
                or not state.enabled
                or state.workspace_id != command.workspace_id
            ):
                return NOTHING
            return emit(
                WebhookDisabled(
                    workspace_id=command.workspace_id,
                    endpoint_id=state.id,
                    reason=command.reason[:500],
                    at=command.now,
                )
            )
        case DeleteWebhook():
            current = live(state, command.workspace_id)
            return emit(
                WebhookDeleted(
                    workspace_id=command.workspace_id, endpoint_id=current.id, at=command.now
                )
            )
    raise TypeError(f"not a webhook command: {type(command).__name__}")


DECIDER: Decider[Command, State] = Decider(initial=initial, evolve=evolve, decide=decide)


def _create(command: CreateWebhook, state: State) -> WebhookCreated:
    if state is not None:
        raise Conflict("A webhook with this id exists already.")
    if command.existing >= MAX_ENDPOINTS:
        raise Conflict(f"A workspace has at most {MAX_ENDPOINTS} webhooks.")
    given = command.given
    check_patterns(given.event_types)
    return WebhookCreated(
        workspace_id=command.workspace_id,
        endpoint_id=command.endpoint_id,
        url=given.url,
        event_types=list(dict.fromkeys(given.event_types)),
        enabled=given.enabled,
        description=given.description,
        secret=command.secret,
        at=command.now,
    )


def _update(command: UpdateWebhook, state: State) -> Decision[None]:
    """Nothing when the patch leaves the endpoint as it is."""
    current, patch = live(state, command.workspace_id), command.patch
    event_types = (
        list(current.event_types)
        if not isinstance(patch.event_types, list)
        else list(dict.fromkeys(patch.event_types))
    )
    check_patterns(event_types)
    enabled = patch.enabled if isinstance(patch.enabled, bool) else current.enabled
    description = patch.description if isinstance(patch.description, str) else current.description
    url = patch.url if isinstance(patch.url, str) else current.url
    unchanged = (
        url == current.url
        and tuple(event_types) == current.event_types
        and enabled == current.enabled
        and description == current.description
    )
    if unchanged:
        return NOTHING
    return emit(
        WebhookUpdated(
            workspace_id=command.workspace_id,
            endpoint_id=current.id,
            url=url,
            event_types=event_types,
            enabled=enabled,
            description=description,
            at=command.now,
        )
    )


def public(state: EndpointState) -> Webhook:
    return Webhook(
        id=state.id,
        url=state.url,
        event_types=list(state.event_types),
        enabled=state.enabled,
        description=state.description,
        disabled_reason=state.disabled_reason,
        created_at=state.created_at,
        updated_at=state.updated_at,
    )


def signing_secrets(secrets_: tuple[Secret, ...] | list[Secret], now: datetime) -> list[str]:
    """The secrets that sign a delivery made at ``now``: the current one, and an earlier
    one whose overlap has not ended."""
    return [s.value for s in secrets_ if s.expires_at is None or s.expires_at > now]


# -- retrying ----------------------------------------------------------------------------------


def parse_schedule(text: str) -> tuple[float, ...]:
    """``"5,300,1800"``; ``"1*30"`` is thirty steps of one second. ValueError if malformed."""
    steps: list[float] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        value, star, count = part.partition("*")
        try:
            seconds, times = float(value), int(count) if star else 1
        except ValueError:
            raise ValueError(f"{part!r} is not seconds or seconds*count") from None
        if seconds < 0 or not 1 <= times <= 10_000:
            raise ValueError(f"{part!r}: seconds must be >= 0 and count 1 to 10000")
        steps += [seconds] * times
    if not steps:
        raise ValueError("the schedule has no steps")
    return tuple(steps)


def retry_delay(
    schedule: tuple[float, ...],
    attempts: int,
    *,
    retry_after: float | None = None,
    max_retry_after: float = 3600.0,
    rand: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after ``attempts`` failed ones; None: give up.

    A receiver's ``Retry-After`` (bounded by ``max_retry_after``) replaces the step."""
    if attempts > len(schedule):
        return None
    if retry_after is not None:
        return min(max(retry_after, 0.0), max_retry_after)
    step = schedule[attempts - 1]
    return step * (rand or random).uniform(0.8, 1.2)


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """``Retry-After``: seconds, or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - now).total_seconds())


# What an answer means for the delivery and the endpoint.
DELIVERED = "delivered"
GONE = "gone"  # 410: the endpoint is disabled
ENDPOINT_DOWN = "endpoint_down"  # the endpoint as a whole: hold every delivery to it
REFUSED = "refused"  # this delivery: retried on its own schedule


def outcome(status: int | None) -> str:
    """``status`` None: no answer (refused connection, timeout, DNS, TLS, a refused address)."""
    if status is None or status >= 500 or status in (408, 429):
        return ENDPOINT_DOWN
    if 200 <= status < 300:
        return DELIVERED
    if status == 410:
        return GONE
    return REFUSED  # redirects (not followed) and other client errors
