"""Webhooks' requests and replies: the tenant's endpoints that receive signed domain events
(``docs/webhooks.md``).

An endpoint is event-sourced: its subject in ``WEBHOOKS`` and its events are in
``confab.contracts.events.webhooks``; what is here may change with the API. The API
shows an endpoint's signing secret once, when it is made.

Deliveries are the webhooks service's own operational records (attempts, statuses,
receivers' answers), kept in its database, never in the log: see
``confab_webhooks.store``.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from confab.contracts.base import Ok, PageLimit, Reply, Request

# -- what an endpoint may ask for --------------------------------------------------------------

# Every webhook event type delivered.
EVENT_TYPES: tuple[str, ...] = (
    "message.created",
    "message.updated",
    "message.deleted",
    "message.reported",
    "message.read",
    "conversation.created",
    "conversation.updated",
    "participant.added",
    "participant.removed",
    "user.created",
    "user.updated",
    "user.banned",
    "user.erased",
    "attachment.stored",
    "notification.due",
)
# Delivered only to endpoints that name them exactly (read receipts are many; a
# notification decision is one per recipient, for tenants who notify with their own stack).
OPT_IN: frozenset[str] = frozenset({"message.read", "notification.due"})
PING = "webhook.ping"
PAYLOAD_VERSION = 1
MAX_PATTERNS = 20
MAX_ENDPOINTS = 20  # per workspace

EventPattern = Annotated[str, msgspec.Meta(min_length=1, max_length=64, pattern=r"^[a-z_.*]+$")]
WebhookUrl = Annotated[str, msgspec.Meta(min_length=8, max_length=2048, pattern=r"^https?://\S+$")]
Description = Annotated[str, msgspec.Meta(max_length=200)]
# How long the old secret keeps signing next to the new one after a rotation.
OverlapSeconds = Annotated[int, msgspec.Meta(ge=0, le=7 * 24 * 3600)]
DeliveryStatus = Literal["pending", "delivered", "failed", "cancelled"]
DeliveryCursor = Annotated[str, msgspec.Meta(max_length=19, pattern=r"^[0-9]{1,19}$")]
DEFAULT_OVERLAP = 24 * 3600

_PATTERN_CHARS = re.compile(r"^[a-z_.*]+$")


@functools.lru_cache(maxsize=4096)  # asked for every (event, endpoint) the intake reads
def matches(pattern: str, event_type: str) -> bool:
    """Whether ``pattern`` (a glob: ``*`` is any run of characters) asks for ``event_type``.
    Opt-in types match only their exact name."""
    if event_type in OPT_IN:
        return pattern == event_type
    return fnmatch.fnmatchcase(event_type, pattern)


def wants(patterns: list[str], event_type: str) -> bool:
    return any(matches(p, event_type) for p in patterns)


def unknown_patterns(patterns: list[str]) -> list[str]:
    """The patterns that match no event type (most likely typos)."""
    return [
        p
        for p in patterns
        if not _PATTERN_CHARS.match(p) or not any(matches(p, t) for t in EVENT_TYPES)
    ]


# -- public objects ----------------------------------------------------------------------------


class Webhook(Reply, kw_only=True, frozen=True):
    id: str
    url: str
    event_types: list[str]
    enabled: bool
    description: str = ""
    # Why the webhooks service disabled it (410, failing for days); null otherwise.
    disabled_reason: str | None = None
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(Webhook, kw_only=True, frozen=True):
    """An endpoint with its signing secret: shown only at creation and rotation."""

    secret: str
    # After a rotation: until when the previous secret also signs.
    previous_secret_expires_at: datetime | None = None


class WebhookList(Reply, kw_only=True, frozen=True):
    data: list[Webhook]
    has_more: bool
    next_cursor: str | None = None


class LogPosition(msgspec.Struct, kw_only=True, frozen=True):
    stream: str
    seq: int


class Delivery(Reply, kw_only=True, frozen=True):
    id: str
    webhook_id: str  # the endpoint
    message_id: str  # the webhook-id header: the same for every attempt
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_status: int | None = None  # the receiver's HTTP status, if it answered
    last_error: str | None = None
    log: LogPosition
    conversation_id: str | None = None
    event_seq: int | None = None
    created_at: datetime  # when the event was stored
    last_attempt_at: datetime | None = None
    next_attempt_at: datetime | None = None
    delivered_at: datetime | None = None


class DeliveryList(Reply, kw_only=True, frozen=True):
    data: list[Delivery]
    has_more: bool
    next_cursor: str | None = None


class Retried(Reply, kw_only=True, frozen=True):
    count: int


class PingResult(Reply, kw_only=True, frozen=True):
    """What the endpoint answered to a signed ``webhook.ping`` (sent once, not retried)."""

    delivered: bool
    message_id: str
    status: int | None = None
    error: str | None = None
    duration_ms: float


# -- request bodies of the public API ------------------------------------------------------


class Body(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    pass


Patterns = Annotated[list[EventPattern], msgspec.Meta(min_length=1, max_length=MAX_PATTERNS)]


class WebhookInput(Body, kw_only=True, frozen=True):
    url: WebhookUrl
    event_types: Patterns
    enabled: bool = True
    description: Description = ""


class WebhookPatch(Body, kw_only=True, frozen=True):
    """Fields left out stay as they are."""

    url: WebhookUrl | msgspec.UnsetType = msgspec.UNSET
    event_types: Patterns | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType = msgspec.UNSET


class RotateInput(Body, kw_only=True, frozen=True):
    overlap_seconds: OverlapSeconds = DEFAULT_OVERLAP


class RetryRangeInput(Body, kw_only=True, frozen=True):
    """Deliveries of one endpoint whose event was stored in [since, until) and that failed
    (or have ``status``: ``delivered`` sends again what a receiver says it lost) are sent
    again."""

    since: datetime
    until: datetime | None = None
    status: Literal["failed", "delivered", "pending"] = "failed"


class DeliveryQuery(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    status: DeliveryStatus | None = None
    limit: PageLimit = 50
    cursor: DeliveryCursor | None = None


class WebhookListQuery(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    limit: PageLimit = 50
    cursor: Annotated[str, msgspec.Meta(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] | None = None


# -- commands and queries ----------------------------------------------------------------------


class CreateWebhook(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "webhooks.cmd.create"
    reply: ClassVar[type[msgspec.Struct]] = WebhookWithSecret
    workspace_id: str
    input: WebhookInput
    actor: str = ""


class UpdateWebhook(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "webhooks.cmd.update"
    reply: ClassVar[type[msgspec.Struct]] = Webhook
    workspace_id: str
    webhook_id: str
    patch: WebhookPatch
    actor: str = ""


class DeleteWebhook(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "webhooks.cmd.delete"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    workspace_id: str
    webhook_id: str
    actor: str = ""


class RotateWebhookSecret(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "webhooks.cmd.rotate_secret"
    reply: ClassVar[type[msgspec.Struct]] = WebhookWithSecret
    workspace_id: str
    webhook_id: str
    overlap_seconds: OverlapSeconds = DEFAULT_OVERLAP
    actor: str = ""


class PingWebhook(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "webhooks.cmd.ping"
    reply: ClassVar[type[msgspec.Struct]] = PingResult
    workspace_id: str
    webhook_id: str


class GetWebhook(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "webhooks.q.get"
    reply: ClassVar[type[msgspec.Struct]] = Webhook
    workspace_id: str
    webhook_id: str


class ListWebhooks(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "webhooks.q.list"
    reply: ClassVar[type[msgspec.Struct]] = WebhookList
    workspace_id: str
    limit: PageLimit = 50
    cursor: str | None = None


class ListDeliveries(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "webhooks.q.deliveries"
    reply: ClassVar[type[msgspec.Struct]] = DeliveryList
    workspace_id: str
    webhook_id: str
    status: DeliveryStatus | None = None
    limit: PageLimit = 50
    cursor: DeliveryCursor | None = None


class RetryDelivery(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "webhooks.cmd.retry_delivery"
    reply: ClassVar[type[msgspec.Struct]] = Delivery
    workspace_id: str
    webhook_id: str
    delivery_id: str


class RetryDeliveries(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "webhooks.cmd.retry_deliveries"
    reply: ClassVar[type[msgspec.Struct]] = Retried
    workspace_id: str
    webhook_id: str
    input: RetryRangeInput
