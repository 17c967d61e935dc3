"""The notifier's tables, in schema ``notifier``.

Read models, written only by the projections (``projections``) in the transaction that
moves their checkpoints, and rebuilt by replay like every read model:

- ``members``, ``messages``, ``conversations``: what the decisions need of each
  conversation (who is in it and how far each has read; each message's sender, seq,
  mentions and whether it is gone; its last stored form, sealed as it is in the log,
  for rendering; the title);
- ``users``: each user's sealed profile (``user.upserted`` as stored: the address and
  name are revealed only when a mail is written), erased, banned;
- ``prefs``, ``settings``, ``push_targets``, ``push_credentials``: the users'
  preferences and push targets, the workspaces' settings and (sealed) FCM and APNs
  credentials, from ``NOTIFIER``.

The work, also written in the projections' transactions, then by the engine:

- ``pending``: one row per (user, conversation) with unread messages nobody was told
  about yet, and when it is due; the projection adds and cancels, the engine decides;
- ``outbox``: decided notifications (one per id, ``domain.notification_id``), until
  every channel has had them; ``notified``: how far each user was told of each
  conversation.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

SCHEMA = "notifier"
ts = sa.DateTime(timezone=True)


@dataclass(frozen=True)
class Tables:
    members: sa.Table
    messages: sa.Table
    conversations: sa.Table
    users: sa.Table
    prefs: sa.Table
    settings: sa.Table
    pending: sa.Table
    notified: sa.Table
    outbox: sa.Table
    push: sa.Table
    credentials: sa.Table


def define_tables(metadata: sa.MetaData) -> Tables:
    members = sa.Table(
        "members",
        metadata,
        sa.Column("conversation_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("read_up_to", sa.Integer, nullable=False, server_default="0"),
    )
    messages = sa.Table(
        "messages",
        metadata,
        sa.Column("conversation_id", sa.Text, primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("message_id", sa.Text, nullable=False),
        sa.Column("sender_id", sa.Text, nullable=True),
        sa.Column("mentions", JSONB, nullable=False, server_default="[]"),
        sa.Column("gone", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("body", sa.LargeBinary, nullable=True),  # the last post or edit, sealed
        sa.Column("kind", sa.Text, nullable=False),  # its event type
        sa.Column("at", ts, nullable=False),
        sa.Index("messages_id", "message_id"),
    )
    conversations = sa.Table(
        "conversations",
        metadata,
        sa.Column("conversation_id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=True),
    )
    users = sa.Table(
        "users",
        metadata,
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("profile", sa.LargeBinary, nullable=True),  # user.upserted, sealed
        sa.Column("erased", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("banned", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    prefs = sa.Table(
        "prefs",
        metadata,
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=True),  # notification.preferences_set
        # A permanent refusal: {"address": sha256 of the address, "code", "reason", "at"}
        sa.Column("email_refused", JSONB, nullable=True),
    )
    settings = sa.Table(
        "settings",
        metadata,
        sa.Column("workspace_id", sa.Text, primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),  # notifier.settings_set
        sa.Column("delay_seconds", sa.Float, nullable=False),
    )
    pending = sa.Table(
        "pending",
        metadata,
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("conversation_id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("part", sa.Integer, nullable=False),
        sa.Column("first_seq", sa.Integer, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("due_at", ts, nullable=False),
        sa.Index("pending_due", "part", "due_at"),
    )
    notified = sa.Table(
        "notified",
        metadata,
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("conversation_id", sa.Text, primary_key=True),
        sa.Column("up_to", sa.Integer, nullable=False),
        sa.Column("at", ts, nullable=False),
        sa.Index("notified_user", "user_id", "at"),
    )
    outbox = sa.Table(
        "outbox",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("conversation_id", sa.Text, nullable=False),
        sa.Column("part", sa.Integer, nullable=False),
        sa.Column("first_seq", sa.Integer, nullable=False),
        sa.Column("last_seq", sa.Integer, nullable=False),
        sa.Column("message_ids", JSONB, nullable=False),
        sa.Column("mentioned", sa.Boolean, nullable=False),
        # pending → sent; the channels done so far, so a retry does not repeat them
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("done", JSONB, nullable=False, server_default="[]"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", ts, nullable=False),
        sa.Column("next_attempt_at", ts, nullable=False),
        sa.Column("sent_at", ts, nullable=True),
        sa.Index(
            "outbox_pending",
            "part",
            "next_attempt_at",
            postgresql_where=sa.text("status = 'pending'"),
        ),
    )
    push = sa.Table(
        "push_targets",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("workspace_id", sa.Text, nullable=False),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("kind", sa.Text, nullable=False),  # webpush, fcm, apns
        sa.Column("address", sa.Text, nullable=False),
        sa.Column("p256dh", sa.Text, nullable=False, server_default=""),
        sa.Column("auth", sa.Text, nullable=False, server_default=""),
        sa.Column("created_at", ts, nullable=False),
        sa.Index("push_user", "user_id"),
    )
    credentials = sa.Table(
        "push_credentials",
        metadata,
        sa.Column("workspace_id", sa.Text, primary_key=True),
        sa.Column("sealed", sa.Text, nullable=False),  # notifier.push_credentials_set
        sa.Column("platforms", JSONB, nullable=False),
    )
    return Tables(
        members,
        messages,
        conversations,
        users,
        prefs,
        settings,
        pending,
        notified,
        outbox,
        push,
        credentials,
    )


METADATA = sa.MetaData(schema=SCHEMA)
TABLES = define_tables(METADATA)
