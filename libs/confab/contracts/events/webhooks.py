"""Webhooks' stored events: a tenant's endpoint, event-sourced.

One subject per endpoint in ``WEBHOOKS``: ``webhooks.evt.<workspace>.<endpoint>``.
An endpoint exists from ``webhook.created`` until ``webhook.deleted``; every
change of its configuration is an event (``webhook.updated``,
``webhook.secret_rotated``, ``webhook.disabled``), so its history is the log.
Its signing secrets are in the log in clear, like a workspace's
``app_secret``: the webhooks service signs with them. Deliveries are never in
the log (the webhooks service's own records).
"""

from __future__ import annotations

from datetime import datetime

from confab.contracts.events.base import Event


def subject(workspace_id: str, endpoint_id: str) -> str:
    return f"webhooks.evt.{workspace_id}.{endpoint_id}"


class WebhookEvent(Event, kw_only=True, frozen=True):
    workspace_id: str
    endpoint_id: str
    at: datetime


class WebhookCreated(WebhookEvent, kw_only=True, frozen=True):
    type = "webhook.created"
    url: str
    event_types: list[str]
    enabled: bool = True
    description: str = ""
    secret: str  # whsec_…: signs every delivery


class WebhookUpdated(WebhookEvent, kw_only=True, frozen=True):
    """The whole configuration after the change; enabling clears a disabled reason."""

    type = "webhook.updated"
    url: str
    event_types: list[str]
    enabled: bool
    description: str = ""


class WebhookSecretRotated(WebhookEvent, kw_only=True, frozen=True):
    """A new secret signs from now on; the one before also signs until
    ``previous_expires_at`` (receivers verifying with either keep working)."""

    type = "webhook.secret_rotated"
    secret: str
    previous_expires_at: datetime


class WebhookDisabled(WebhookEvent, kw_only=True, frozen=True):
    """The webhooks service stopped delivering: a 410 answer, or failing for days."""

    type = "webhook.disabled"
    reason: str


class WebhookDeleted(WebhookEvent, kw_only=True, frozen=True):
    type = "webhook.deleted"
