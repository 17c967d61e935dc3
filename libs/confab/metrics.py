"""Prometheus metrics shared by every process, and the aiohttp handlers that expose them."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

RPC_HANDLED = Counter(
    "confab_rpc_handled_total",
    "RPC requests handled, by subject and outcome",
    ["subject", "outcome"],
)
PROJECTION_APPLIED = Counter(
    "confab_projection_events_total", "Events applied to a read model", ["projection"]
)
PROJECTION_CHECKPOINT = Gauge(
    "confab_projection_checkpoint", "Last stream sequence applied", ["projection"]
)
HTTP_REQUESTS = Counter(
    "confab_http_requests_total", "HTTP requests answered, by route and status", ["route", "status"]
)
HTTP_LATENCY = Histogram(
    "confab_http_request_seconds",
    "HTTP request latency",
    ["route"],
    buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)


def render() -> tuple[bytes, str]:
    """The exposition text and its content type (aiohttp wants the charset apart)."""
    return generate_latest(), CONTENT_TYPE_LATEST.split(";")[0]
