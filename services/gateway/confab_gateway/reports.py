"""Support reports over HTTP (issue 19): ``GET /api/v1/support/reports?since=&until=``.

Conversations and messages per UTC day and the median first response and resolution
times, computed by messaging from its read models (``confab_messaging.reports``). The
range defaults to the last 14 days, today included, and covers at most 92.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import msgspec

from confab.contracts.reports import GetSupportReport, SupportReport
from confab.staff import CONVERSATIONS_READ
from confab_gateway.api import Call, Router

router = Router()
DEFAULT_DAYS = 14


class ReportRange(msgspec.Struct, kw_only=True, frozen=True):
    since: date | None = None
    until: date | None = None


@router.route(
    "GET",
    "/api/v1/support/reports",
    auth="api_key",
    permission=CONVERSATIONS_READ,
    tag="support",
    summary="Support reports per UTC day (since, until: YYYY-MM-DD, inclusive, at most 92 days; "
    "default the last 14): conversations started, messages, median first response and "
    "resolution times",
    query=ReportRange,
    response=SupportReport,
    errors=(401, 403, 422),
)
async def support_report(call: Call) -> SupportReport:
    q: ReportRange = call.query
    until = q.until or datetime.now(UTC).date()
    since = q.since or until - timedelta(days=DEFAULT_DAYS - 1)
    return await call.rpc.call(GetSupportReport(actor=call.actor, since=since, until=until))
