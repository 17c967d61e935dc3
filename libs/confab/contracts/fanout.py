"""Fanout: what other services ask of the real-time socket gateway.

Webhooks (Pusher's ``channel_occupied``, ``channel_vacated``, ``member_added``,
``member_removed``, ``client_event``) are configured per workspace. The fanout
keeps the configuration in its own KV bucket; the admin API sets and reads it
through these requests, so no other service writes the fanout's state.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from confab.contracts.base import Reply, Request

WebhookEventType = Literal[
    "channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event"
]
WEBHOOK_EVENT_TYPES: frozenset[str] = frozenset(WebhookEventType.__args__)  # type: ignore[attr-defined]
MAX_WEBHOOKS = 10

WebhookUrl = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^https?://[^\s]+$")]


class WebhookTarget(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    url: WebhookUrl
    # Left out: every type.
    event_types: Annotated[list[WebhookEventType], msgspec.Meta(max_length=5)] | None = None


class WebhookConfig(Reply, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A workspace's webhooks, as stored in the fanout's ``webhooks`` bucket (key: workspace id)."""

    webhooks: Annotated[list[WebhookTarget], msgspec.Meta(max_length=MAX_WEBHOOKS)] = []


class SetWebhooks(Request, kw_only=True, frozen=True):
    """Replace the workspace's webhooks (an empty list turns them off); replies what is stored."""

    subject: ClassVar[str] = "fanout.cmd.set_webhooks"
    reply: ClassVar[type[msgspec.Struct]] = WebhookConfig
    workspace_id: str
    config: WebhookConfig


class GetWebhooks(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "fanout.q.get_webhooks"
    reply: ClassVar[type[msgspec.Struct]] = WebhookConfig
    workspace_id: str
