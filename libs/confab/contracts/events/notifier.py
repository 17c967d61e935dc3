"""The notifier's stored events: what users and tenants chose, and what was decided.

Subjects in ``NOTIFIER``: ``notify.evt.<workspace>.<kind>.<id>``, kind

- ``prefs``: one subject per user; ``notification.preferences_set`` carries the user's
  whole notification preferences after each change (the last one wins), and
  ``notification.email_refused`` a mail server's permanent refusal of their address;
- ``prefs`` also has the user's push targets: ``notification.push_target_added`` and
  ``notification.push_target_removed`` (browsers' push subscriptions, mobile devices);
- ``settings``: one subject per workspace (the id is the workspace's);
  ``notifier.settings_set`` carries the workspace's whole notifier settings (delay,
  sender name, link, templates) after each change; ``notifier.push_credentials_set``
  its FCM and APNs credentials, sealed;
- ``due``: one subject per user; ``notification.due`` is a decision of the notifier:
  this user is told about these unread messages of this conversation. Its id is the
  notification's (``Nats-Msg-Id``), so a decision taken twice (a restart, two copies)
  is stored once. It holds references only, never content; the tenant's webhooks carry
  it as ``notification.due``.

- ``invitation``: one subject per staff invitation (the id is the invitation's);
  ``notifier.invitation_mail_requested`` asks for the invitation email, its link, the
  invitee's address and the names in it sealed with the deployment's key (the log holds
  only ciphertext); ``notifier.invitation_mail_sent`` and
  ``notifier.invitation_mail_refused`` are its outcome.

None of these events has personal fields: preferences and decisions are ids, choices
and counts, push targets are device addresses. Email addresses and names stay in
identity's sealed ``user.upserted``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

import msgspec

from confab.contracts.events.base import Event

Level = Literal["all", "mentions", "none"]


def subject(workspace_id: str, kind: str, entity_id: str) -> str:
    return f"notify.evt.{workspace_id}.{kind}.{entity_id}"


class QuietHours(msgspec.Struct, kw_only=True, frozen=True):
    """Local times ``HH:MM`` in the user's time zone; ``start`` after ``end`` spans midnight."""

    start: str
    end: str


class Template(msgspec.Struct, kw_only=True, frozen=True, omit_defaults=True):
    """A workspace's own email template for one language (Jinja, sandboxed, autoescaped)."""

    subject: str
    text: str
    html: str


class PreferencesSet(Event, kw_only=True, frozen=True):
    type = "notification.preferences_set"
    workspace_id: str
    user_id: str
    level: Level = "all"
    conversations: dict[str, Level] = {}
    quiet_hours: QuietHours | None = None
    time_zone: str = "UTC"
    digest_seconds: int = 0  # at least this long between two notifications to the user
    email: bool = True
    push: bool = True
    language: str | None = None
    by: str = ""  # "user", "tenant", "unsubscribe"
    at: datetime


class EmailRefused(Event, kw_only=True, frozen=True):
    """A mail server refused the user's address for good (a 5xx answer): recorded on the
    user; no more email is sent to that address until the user's address changes."""

    type = "notification.email_refused"
    workspace_id: str
    user_id: str
    notification_id: str
    address_hash: str  # sha256 of the refused address, lower-cased: a new address is tried
    code: int
    reason: str
    at: datetime


class SettingsSet(Event, kw_only=True, frozen=True):
    type = "notifier.settings_set"
    workspace_id: str
    delay_seconds: float = 60.0
    sender_name: str = ""
    link_url: str = ""  # "https://app.example/chat/{conversation_id}"; empty: no link
    language: str = "en"  # for users without their own
    templates: dict[str, Template] = {}
    at: datetime


class NotificationDue(Event, kw_only=True, frozen=True):
    type = "notification.due"
    workspace_id: str
    notification_id: str
    user_id: str
    conversation_id: str
    message_ids: list[str]
    count: int
    first_seq: int
    last_seq: int
    mentioned: bool = False
    channels: list[str] = []
    at: datetime


PushKind = Literal["webpush", "fcm", "apns"]


class PushTargetAdded(Event, kw_only=True, frozen=True):
    """A place to push the user's notifications: a browser's push subscription (RFC 8030:
    its endpoint and its ``p256dh`` and ``auth`` keys) or a mobile device's token (FCM or
    APNs). ``target_id`` is derived from what it names, so registering it again is the
    same target."""

    type = "notification.push_target_added"
    workspace_id: str
    user_id: str
    target_id: str
    kind: PushKind
    address: str  # the web push endpoint URL, or the device token
    p256dh: str = ""
    auth: str = ""
    at: datetime


class PushTargetRemoved(Event, kw_only=True, frozen=True):
    """Removed by the user or tenant, or because the push service said it is gone (404 or
    410 from a web push service, UNREGISTERED from FCM, 410 Unregistered from APNs)."""

    type = "notification.push_target_removed"
    workspace_id: str
    user_id: str
    target_id: str
    reason: str
    at: datetime


class PushCredentialsSet(Event, kw_only=True, frozen=True):
    """A workspace's credentials for FCM and APNs, sealed (AES-256-GCM) with the
    deployment's key in the notifier's KV bucket: the log holds only ciphertext."""

    type = "notifier.push_credentials_set"
    workspace_id: str
    sealed: str  # v1.<base64url(nonce | ciphertext)> of the JSON credentials
    platforms: list[str] = []
    at: datetime


class InvitationMailRequested(Event, kw_only=True, frozen=True):
    """Email a staff invitation (asked by the gateway when a member invites someone).
    ``sealed`` holds the accept link (the invitation's secret), the address and the
    names, AES-256-GCM with the deployment's key bound to the invitation id."""

    type = "notifier.invitation_mail_requested"
    workspace_id: str
    invitation_id: str
    role: str
    expires_at: datetime
    sealed: str
    at: datetime


class InvitationMailSent(Event, kw_only=True, frozen=True):
    type = "notifier.invitation_mail_sent"
    workspace_id: str
    invitation_id: str
    at: datetime


class InvitationMailRefused(Event, kw_only=True, frozen=True):
    """The invitee's mail server refused the address for good (a 5xx answer)."""

    type = "notifier.invitation_mail_refused"
    workspace_id: str
    invitation_id: str
    address_hash: str
    code: int
    reason: str
    at: datetime


NOTIFIER_EVENTS = (
    PreferencesSet,
    EmailRefused,
    SettingsSet,
    NotificationDue,
    PushTargetAdded,
    PushTargetRemoved,
    PushCredentialsSet,
    InvitationMailRequested,
    InvitationMailSent,
    InvitationMailRefused,
)
