"""The fanout's Prometheus metrics (served on ``/metrics`` with the shared ones).

Counted once per channel event or per connection, never per frame written,
so the delivery loop stays free of bookkeeping.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

CONNECTIONS = Gauge("confab_fanout_connections", "Open WebSocket connections on this node")
CHANNEL_EVENTS = Counter(
    "confab_fanout_channel_events_total", "Channel events delivered to this node's sockets"
)
FRAMES = Counter("confab_fanout_frames_total", "Event frames written to this node's sockets")
SLOW_CLOSES = Counter(
    "confab_fanout_slow_socket_closes_total", "Sockets closed because their send buffer was full"
)
CLIENT_EVENTS = Counter(
    "confab_fanout_client_events_total", "Client events by outcome", ["outcome"]
)
API_EVENTS = Counter("confab_fanout_api_events_total", "Events triggered through the HTTP API")
WEBHOOKS = Counter("confab_fanout_webhooks_total", "Webhook events by outcome", ["outcome"])
DOMAIN_EVENTS = Counter(
    "confab_fanout_domain_events_total",
    "Conversation events by outcome: rendered (a local subscriber), skipped (none), "
    "typing, gap (this node missed stored events), lookup_failed, dropped",
    ["outcome"],
)
RESUMES = Counter("confab_fanout_resumes_total", "confab:resume requests by outcome", ["outcome"])
REFUSALS = Counter(
    "confab_fanout_limit_refusals_total",
    "Connections, sign-ins, subscriptions and HTTP API requests refused by a limit",
    ["limit"],
)
