"""Contracts every service answers, whatever it owns."""

from __future__ import annotations

from typing import ClassVar, Literal

import msgspec

from confab.contracts.base import Reply, Request

SERVICES = ("identity", "messaging", "media", "webhooks", "notifier", "fanout")


class HealthReply(Reply, kw_only=True, frozen=True):
    service: str
    instance: str
    status: Literal["ok", "degraded"]
    checks: dict[str, str] = msgspec.field(default_factory=dict)
    version: str = ""
    uptime_seconds: float = 0.0


class HealthQuery(Request, kw_only=True, frozen=True):
    """Asked on ``<service>.q.health``; the subject is chosen by the caller."""

    subject: ClassVar[str] = "{service}.q.health"
    reply: ClassVar[type[msgspec.Struct]] = HealthReply

    @staticmethod
    def subject_for(service: str) -> str:
        return f"{service}.q.health"
