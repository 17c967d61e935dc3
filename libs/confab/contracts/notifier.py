"""The notifier's requests and replies: users' notification preferences, a workspace's
notifier settings and email templates, one-click unsubscribe (``docs/notifications.md``).

Preferences and settings are event-sourced in ``NOTIFIER``
(``confab.contracts.events.notifier``); what is here may change with the API.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, ClassVar, Literal

import msgspec

from confab.contracts.base import Ok, Reply, Request
from confab.contracts.events.notifier import Level, QuietHours, Template

TimeZone = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
Language = Annotated[str, msgspec.Meta(min_length=2, max_length=16, pattern=r"^[A-Za-z_-]+$")]
DigestSeconds = Annotated[int, msgspec.Meta(ge=0, le=7 * 24 * 3600)]
ConversationLevels = Annotated[dict[str, Level | None], msgspec.Meta(max_length=100)]
SenderName = Annotated[str, msgspec.Meta(max_length=100)]
LinkUrl = Annotated[str, msgspec.Meta(max_length=2048, pattern=r"^(https?://\S+)?$")]
DelaySeconds = Annotated[float, msgspec.Meta(ge=0, le=7 * 24 * 3600)]
Token = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]


class QuietHoursInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    start: Annotated[str, msgspec.Meta(max_length=5)]
    end: Annotated[str, msgspec.Meta(max_length=5)]


class Preferences(Reply, kw_only=True, frozen=True):
    """A user's notification preferences: a level for everything (``all``, ``mentions``
    only, ``none``) and per conversation, quiet hours in their time zone, the least time
    between two notifications, the channels."""

    user_id: str
    level: Level
    conversations: dict[str, Level]
    quiet_hours: QuietHours | None
    time_zone: str
    digest_seconds: int
    email: bool
    push: bool
    language: str | None
    email_refused: bool = False  # a mail server refused the current address for good


class PreferencesPatch(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Fields left out stay as they are. ``conversations`` sets a level per conversation
    id (``null`` removes it); ``quiet_hours: null`` turns quiet hours off."""

    level: Level | msgspec.UnsetType = msgspec.UNSET
    conversations: ConversationLevels | msgspec.UnsetType = msgspec.UNSET
    quiet_hours: QuietHoursInput | msgspec.UnsetType | None = msgspec.UNSET
    time_zone: TimeZone | msgspec.UnsetType = msgspec.UNSET
    digest_seconds: DigestSeconds | msgspec.UnsetType = msgspec.UNSET
    email: bool | msgspec.UnsetType = msgspec.UNSET
    push: bool | msgspec.UnsetType = msgspec.UNSET
    language: Language | msgspec.UnsetType | None = msgspec.UNSET


class GetPreferences(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.q.preferences"
    reply: ClassVar[type[msgspec.Struct]] = Preferences
    workspace_id: str
    user_id: str


class SetPreferences(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.cmd.set_preferences"
    reply: ClassVar[type[msgspec.Struct]] = Preferences
    workspace_id: str
    user_id: str
    patch: PreferencesPatch
    by: str = "tenant"


class TemplateInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    subject: Annotated[str, msgspec.Meta(min_length=1, max_length=500)]
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=50_000)]
    html: Annotated[str, msgspec.Meta(min_length=1, max_length=50_000)]


class NotifierSettings(Reply, kw_only=True, frozen=True):
    """A workspace's notifier settings; ``templates`` are its own (the defaults are used
    for the other languages: ``default_templates``)."""

    delay_seconds: float
    sender_name: str
    link_url: str
    language: str
    templates: dict[str, Template]
    default_templates: dict[str, Template]


class SettingsPatch(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Fields left out stay as they are; a template ``null`` goes back to the default."""

    delay_seconds: DelaySeconds | msgspec.UnsetType = msgspec.UNSET
    sender_name: SenderName | msgspec.UnsetType = msgspec.UNSET
    link_url: LinkUrl | msgspec.UnsetType = msgspec.UNSET
    language: Language | msgspec.UnsetType = msgspec.UNSET
    templates: (
        Annotated[dict[Language, TemplateInput | None], msgspec.Meta(max_length=20)]
        | msgspec.UnsetType
    ) = msgspec.UNSET


class GetSettings(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.q.settings"
    reply: ClassVar[type[msgspec.Struct]] = NotifierSettings
    workspace_id: str


class SetSettings(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.cmd.set_settings"
    reply: ClassVar[type[msgspec.Struct]] = NotifierSettings
    workspace_id: str
    patch: SettingsPatch


class PreviewInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A template to try (or the workspace's for ``language``), with sample messages."""

    language: Language = "en"
    template: TemplateInput | None = None


class Preview(Reply, kw_only=True, frozen=True):
    subject: str
    text: str
    html: str


class PreviewTemplate(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.q.preview"
    reply: ClassVar[type[msgspec.Struct]] = Preview
    workspace_id: str
    input: PreviewInput


class Unsubscribe(Request, kw_only=True, frozen=True):
    """One-click unsubscribe (RFC 8058): the token of a notification email."""

    subject: ClassVar[str] = "notifier.cmd.unsubscribe"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    token: Token


# -- push ------------------------------------------------------------------------------------

PushUrl = Annotated[str, msgspec.Meta(min_length=8, max_length=2048, pattern=r"^https?://\S+$")]
KeyText = Annotated[str, msgspec.Meta(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_=-]+$")]
DeviceToken = Annotated[
    str, msgspec.Meta(min_length=8, max_length=4096, pattern=r"^[A-Za-z0-9:_.=-]+$")
]
Pem = Annotated[str, msgspec.Meta(min_length=1, max_length=10_000)]
Short = Annotated[str, msgspec.Meta(min_length=1, max_length=300)]


class PushSubscriptionKeys(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    p256dh: KeyText
    auth: KeyText


class PushSubscriptionInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A browser's ``PushSubscription.toJSON()`` (``expirationTime`` is ignored)."""

    endpoint: PushUrl
    keys: PushSubscriptionKeys
    expirationTime: int | None = None


class DeviceInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    platform: Literal["fcm", "apns"]
    token: DeviceToken


class PushTarget(Reply, kw_only=True, frozen=True):
    id: str
    kind: str  # webpush, fcm, apns
    created_at: datetime


class PushTargetList(Reply, kw_only=True, frozen=True):
    data: list[PushTarget]
    has_more: bool = False
    next_cursor: str | None = None


class AddPushTarget(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.cmd.add_push_target"
    reply: ClassVar[type[msgspec.Struct]] = PushTarget
    workspace_id: str
    user_id: str
    kind: Literal["webpush", "fcm", "apns"]
    address: str
    p256dh: str = ""
    auth: str = ""


class RemovePushTarget(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.cmd.remove_push_target"
    reply: ClassVar[type[msgspec.Struct]] = Ok
    workspace_id: str
    user_id: str
    target_id: str


class ListPushTargets(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.q.push_targets"
    reply: ClassVar[type[msgspec.Struct]] = PushTargetList
    workspace_id: str
    user_id: str
    kinds: list[str] = []


class PushConfig(Reply, kw_only=True, frozen=True):
    """What a browser subscribes with: the deployment's VAPID public key."""

    vapid_public_key: str


class GetPushConfig(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.q.push_config"
    reply: ClassVar[type[msgspec.Struct]] = PushConfig
    workspace_id: str


class FcmCredentials(msgspec.Struct, kw_only=True, frozen=True):
    """The fields of a Firebase service account's JSON key that sending needs (others in
    the file are ignored)."""

    project_id: Short
    client_email: Short
    private_key: Pem
    private_key_id: Annotated[str, msgspec.Meta(max_length=300)] = ""


class ApnsCredentials(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A token-based APNs key: the team, the key's id, its ``.p8`` text, the app's bundle
    id (``apns-topic``), and which APNs it is for."""

    team_id: Short
    key_id: Short
    private_key: Pem
    topic: Short
    environment: Literal["production", "development"] = "production"


class PushCredentialsInput(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Replaces the workspace's credentials; a platform left out has none afterwards."""

    fcm: FcmCredentials | None = None
    apns: ApnsCredentials | None = None


class PushCredentialsReply(Reply, kw_only=True, frozen=True):
    platforms: list[str]  # the credentials are never shown again


class SetPushCredentials(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.cmd.set_push_credentials"
    reply: ClassVar[type[msgspec.Struct]] = PushCredentialsReply
    workspace_id: str
    input: PushCredentialsInput


# -- staff invitations by email -------------------------------------------------------------

InvitationStatus = Literal["pending", "sent", "refused", "cancelled", "failed", "off"]


class InvitationMail(Reply, kw_only=True, frozen=True):
    """Where an invitation's email is: ``pending`` (stored, to be sent or tried again),
    ``sent``, ``refused`` (the address, for good), ``cancelled`` (withdrawn, accepted or
    expired before it went), ``failed`` (tried too often), ``off`` (no mail server)."""

    invitation_id: str
    status: InvitationStatus
    attempts: int = 0
    last_error: str | None = None
    refused_code: int | None = None


class MailInvitation(Request, kw_only=True, frozen=True):
    """Email a new staff invitation; answered once the request is stored in ``NOTIFIER``
    (its secrets sealed). ``link`` is the accept link's path, token included: it travels
    in this request and reply only, never in clear in a stream."""

    subject: ClassVar[str] = "notifier.cmd.mail_invitation"
    reply: ClassVar[type[msgspec.Struct]] = InvitationMail
    workspace_id: str
    invitation_id: str
    email: Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
    role: Annotated[str, msgspec.Meta(max_length=32)]
    expires_at: datetime
    link: Annotated[str, msgspec.Meta(min_length=2, max_length=1000, pattern=r"^/\S+$")]
    workspace_name: Annotated[str, msgspec.Meta(max_length=200)] = ""
    inviter_name: Annotated[str, msgspec.Meta(max_length=200)] = ""


class GetInvitationMail(Request, kw_only=True, frozen=True):
    subject: ClassVar[str] = "notifier.q.invitation_mail"
    reply: ClassVar[type[msgspec.Struct]] = InvitationMail
    workspace_id: str
    invitation_id: str
