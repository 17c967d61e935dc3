"""Settings of the fanout service (the Pusher-protocol socket gateway).

The fanout's own settings are in its namespace (``confab.settings``): the field
``activity_timeout`` is read from ``CONFAB_FANOUT_ACTIVITY_TIMEOUT`` or
``--fanout-activity-timeout``, since ``confab up`` gives every service the same
environment. Only ``trusted_proxies`` is read without it (shared with the gateway).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import msgspec

from confab.settings import Port, PositiveFloat, Settings

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Limit = Annotated[int, msgspec.Meta(ge=0)]  # 0: no limit
BucketName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class FanoutSettings(Settings, kw_only=True, frozen=True):
    __namespace__: ClassVar[str] = "fanout"
    __shared__: ClassVar[frozenset[str]] = frozenset({"trusted_proxies"})

    host: str = "127.0.0.1"
    port: Port = 6001
    # Python's own loop here, unlike the other services: the fanout's send path writes
    # frames straight to the socket on its selector loop (``connection.raw_socket``), which
    # uvloop bypasses; and on uvloop a socket closed for a message over the limit (1009)
    # while the client still sent was reset before the close frame arrived more often
    # (Autobahn 9.3-9.5).
    event_loop: Literal["uvloop", "asyncio"] = "asyncio"

    # -- connections -------------------------------------------------------------------
    # Advertised in pusher:connection_established: the client pings after this many
    # seconds without receiving anything.
    activity_timeout: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 30
    # The server pings a socket it has heard nothing from for this long ...
    ping_interval: PositiveFloat = 60.0
    # ... and closes it with 4201 if it is still silent this long after the ping.
    pong_timeout: PositiveFloat = 30.0
    # Largest WebSocket message a client may send (bigger: closed with 1009).
    max_message_bytes: PositiveInt = 16 * 1024
    # Per-socket bound on unsent bytes; a socket this far behind is closed with 4200.
    send_buffer_bytes: PositiveInt = 512 * 1024
    # Client events a connection may send per second (more: pusher:error 4301).
    client_events_per_second: PositiveFloat = 10.0
    # Channels one socket may be in, its sign-in channel included (more:
    # pusher:subscription_error 403 LimitReached); 0: no limit.
    max_subscriptions_per_socket: Limit = 100
    # New subscriptions a socket may make per second, in bursts of up to ... (more:
    # pusher:subscription_error 429 LimitReached); 0 per second: no limit. Each is a
    # write to the cluster's state; the burst lets a reconnecting client rejoin all.
    subscribes_per_second: Annotated[float, msgspec.Meta(ge=0)] = 50.0
    subscribe_burst: PositiveInt = 100
    # How long shutdown waits for sockets to take their 4200 close.
    shutdown_grace: PositiveFloat = 5.0

    # -- limits per address, app and user (per node; 0: no limit) ----------------------
    # Open sockets per client address (more: pusher:error 4100, close 4100). High by
    # default: `confab bench idle` opens 20,000 from 127.0.0.1.
    max_connections_per_address: Limit = 25_000
    # Open sockets per app (workspace) (more: 4100).
    max_connections_per_app: Limit = 100_000
    # Sockets signed in (pusher:signin) as one user of an app (more: 4100).
    max_connections_per_user: Limit = 100
    # Addresses or networks (comma-separated) of proxies whose X-Forwarded-For is
    # believed about the client's address; empty: the peer is the client. Shared on
    # purpose: the gateway reads the same CONFAB_TRUSTED_PROXIES, and the same balancer
    # (`confab up --cluster`'s HAProxy) is in front of both.
    trusted_proxies: str = ""
    # Signed Pusher HTTP API requests per app (more: 429); 0 per second: no limit.
    api_requests_per_second: Annotated[float, msgspec.Meta(ge=0)] = 1000.0
    api_request_burst: PositiveInt = 2000

    # -- presence and cluster state (NATS KV) --------------------------------------------
    presence_bucket: BucketName = "presence"
    # A node refreshes its heartbeat key every ttl/3; a dead node's members vanish
    # from every other node within this many seconds.
    presence_ttl: Annotated[float, msgspec.Meta(ge=1.0)] = 30.0
    presence_max_members: PositiveInt = 100
    presence_max_member_bytes: PositiveInt = 2048

    # -- apps ----------------------------------------------------------------------------
    # How long an app key identity says does not exist is remembered.
    unknown_app_ttl: PositiveFloat = 5.0

    # -- webhooks ------------------------------------------------------------------------
    webhooks_bucket: BucketName = "webhooks"
    webhook_queue: PositiveInt = 10_000
    webhook_workers: PositiveInt = 4
    webhook_timeout: PositiveFloat = 5.0
    # Failed deliveries are retried with backoff for this long (Pusher: 5 minutes).
    webhook_retry_for: PositiveFloat = 300.0

    # -- domain events and recovery --------------------------------------------------------
    # Conversations a node keeps folded without local subscribers (LRU; those with
    # subscribers are always kept), so a reconnect or resume need not read them again.
    idle_conversations: PositiveInt = 2000
    # Users' public profiles, for senders and participants (LRU).
    profile_cache: PositiveInt = 50_000
    # confab:resume sends at most this many missed events; beyond, the client resyncs
    # over the REST API (confab:resume_failed). Each conversation followed keeps this
    # many of its last events' references (no content).
    resume_max_events: PositiveInt = 1000
    # Every this many seconds, the node asks the stream for the last event of the
    # conversations with local subscribers and activity in the last ..._window seconds
    # (of all it follows after a NATS reconnect), and delivers any it missed: the bound
    # on a lost last event.
    recheck_interval: PositiveFloat = 1.0
    recheck_window: PositiveFloat = 60.0
