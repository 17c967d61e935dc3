"""Sending: signed POSTs, in order per conversation and endpoint, retried with back-off.

Work comes from the intake (``offer``: rows it just queued) and from the database
(the pending rows of partitions this process takes over, at start or when another
copy stops, and rows the API asked to send again). Each endpoint has *lanes*, one per
conversation (or user, or attachment); a lane sends its oldest delivery and the next
only once that one is delivered or has failed for good, so one endpoint sees one
conversation's events in log order. Lanes of one endpoint go out side by side, up to
``endpoint_concurrency`` at a time.

An attempt is a POST of the body rendered now (``render``), signed the Standard
Webhooks way (``webhook-id``, ``webhook-timestamp``, ``webhook-signature`` with one
``v1,`` signature per live secret), through a client that never follows a redirect,
never connects to a refused address (``confab.egress``), reads at most
``response_limit_bytes`` of the answer and gives up after
``timeout_seconds``. What an answer means (``domain.outcome``):

- 2xx: delivered;
- 410: the endpoint is disabled (``webhook.disabled``), its deliveries wait;
- no answer, 408, 429, 5xx: the endpoint as a whole is held until the delivery's next
  attempt (its ``Retry-After`` if it gave one), so a receiver that is down is not
  hammered by every lane at once;
- any other status: this delivery alone waits for its next attempt.

Most attempts take no task of their own: the body kept for the event's other endpoints,
or made at once from the conversation's view and the profiles held (``Renderer.now``),
a connection open already, and the answer judged in a callback on its future. On uvloop
a task per attempt and its wake-up on the answer cost about 10 µs, a callback about 1.
A body that needs the log read, reading the endpoints again and opening a connection
take a task.

The wait after the n-th failed attempt is the n-th step of ``retry_schedule``
(±20 % jitter); after the last step the delivery has failed (listed, and can be sent
again through the API) and its lane moves on. An endpoint with no success for
``disable_after_seconds`` is disabled with the reason.

Outcomes are written back in batches (``store.RECORD``). A crash loses none: a row not
yet marked delivered is sent again by whoever owns its partition next (at least once;
``webhook-id`` is the same for every attempt, so receivers drop duplicates). While
partitions move between copies, a delivery in flight in the copy that gave one up may
be sent once more by the copy that took it.

**First attempts before the row** (``send_first``, ``FirstAttempts``). Most deliveries
succeed at once, and writing a row, then writing it again as delivered, was most of
what a delivery cost the database. So the intake hands a fresh batch's deliveries to
the sender *inside* its transaction, with ids taken from the table's sequence, waits
up to ``first_attempt_wait_seconds`` for their first attempts, and writes each row once,
with the outcome it already has (delivered, or pending with its next attempt). A
delivery not attempted by then is written as pending and its outcome recorded as
usual. This keeps every guarantee: the rows and the checkpoint still commit together,
so a crash before the commit sends the batch again (at least once, same
``webhook-id``), and a batch rolled back is forgotten here (``rolled_back``). Only what
can go out at once is sent first: a partition this process sends for, an endpoint
known, enabled and not held, a lane with nothing older waiting; the rest, and events
stored more than ``FIRST_HORIZON`` ago (a catch-up, a replay), take the usual way.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import contextlib
import functools
import heapq
import hmac
import itertools
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert

from confab.errors import ConfabError
from confab.logging import get_logger
from confab.projection import ProjectionRunner
from confab_webhooks import domain
from confab_webhooks.domain import Secret
from confab_webhooks.outbound import Answer, Outbound
from confab_webhooks.projections import NOT_ATTEMPTED, secrets_of
from confab_webhooks.render import Renderer, message_id_of
from confab_webhooks.settings import WebhooksSettings
from confab_webhooks.store import DELIVERIES, HEALTH, RECORD, Store

log = get_logger("confab.webhooks.delivery")

Disable = Callable[[str, str, str], Awaitable[None]]  # (workspace, endpoint, reason)
FLUSH_SECONDS = 0.1
OWNERSHIP_SECONDS = 0.5
UNMATCHED_SECONDS = 30.0  # an outcome whose row never appears (its batch rolled back)
RENDER_RETRY_SECONDS = 1.0
PRUNE_SECONDS = 60.0
FIRST_HORIZON = timedelta(seconds=60)  # older events are never sent before their row


_clock: list[Any] = [0, datetime.fromtimestamp(0, UTC)]  # the millisecond, its time


def utcnow() -> datetime:
    """Now, to the millisecond: every reading within one shares one time. A burst of
    answers is then a few distinct outcomes, which the intake writes once each
    (``projections._queue_statement``); and one time object serves many deliveries."""
    ms = time.time_ns() // 1_000_000
    if ms != _clock[0]:
        _clock[0], _clock[1] = ms, datetime.fromtimestamp(ms / 1000, UTC)
    return _clock[1]


async def _every(seconds: float, work: Callable[[], Awaitable[Any]], failure: str) -> None:
    """``work`` every ``seconds``, for ever; a failure is logged and the next round goes on."""
    while True:
        await asyncio.sleep(seconds)
        try:
            await work()
        except Exception as exc:
            log.warning(failure, error=str(exc) or type(exc).__name__)


# -- one attempt --------------------------------------------------------------------------------


class Signer:
    """``webhook-signature`` for a body: one ``v1,<base64>`` per live secret.

    The Standard Webhooks scheme: HMAC-SHA256, keyed with the secret's bytes (base64 after
    ``whsec_``), of ``<id>.<timestamp>.<body>``, in base64. Computed here with OpenSSL's
    one-shot ``hmac.digest`` over the body's bytes as sent; the ``standardwebhooks``
    package's ``sign`` builds an HMAC object and decodes and encodes the body each time.
    Receivers verify with that package (so do the tests)."""

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}

    def headers(
        self, message_id: str, body: bytes, secrets_: Iterable[str], now: datetime
    ) -> dict[str, str]:
        timestamp = int(now.timestamp())
        signed = b"%s.%d.%s" % (message_id.encode(), timestamp, body)
        signatures = []
        for secret in secrets_:
            key = self._keys.get(secret)
            if key is None:
                key = self._keys[secret] = secret_bytes(secret)
            digest = hmac.digest(key, signed, "sha256")
            signatures.append("v1," + binascii.b2a_base64(digest, newline=False).decode())
        return {
            "content-type": "application/json",
            "webhook-id": message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures),
        }


def secret_bytes(secret: str) -> bytes:
    """A ``whsec_<base64>`` secret's key, as Standard Webhooks libraries decode it."""
    return base64.b64decode(secret.removeprefix("whsec_") + "==")


# -- the work in memory ----------------------------------------------------------------------------


@dataclass(slots=True)
class Item:
    id: int  # the delivery row's
    row: dict[str, Any]
    attempts: int
    due: float = 0.0  # monotonic time of the next attempt
    unwritten: FirstAttempts | None = None  # sent before its row is written: the batch
    outcome: Outcome | None = None  # the last one, while ``first`` is set
    settled: bool = False  # its batch does not wait for it any more
    void: bool = False  # its batch rolled back: its outcome is not recorded


def _item_id(item: Item) -> int:
    return item.id


@dataclass(slots=True)
class Lane:
    key: str
    target: Target
    items: list[Item] = field(default_factory=list)  # by id: log order
    busy: bool = False
    ready: bool = False  # in its target's ready queue
    timer: bool = False  # in the sender's timer heap


@dataclass(slots=True)
class Target:
    """One endpoint as the sender uses it."""

    id: str
    workspace_id: str = ""
    url: str = ""
    secrets: tuple[Secret, ...] = ()
    enabled: bool = False
    known: bool = False  # its configuration is loaded
    lanes: dict[str, Lane] = field(default_factory=dict)
    ready: deque[Lane] = field(default_factory=deque)
    in_flight: int = 0
    hold_until: float = 0.0
    failing_since: datetime | None = None
    disabling: bool = False


@dataclass(slots=True)
class Outcome:
    id: int
    status: str
    attempts: int
    last_status: int | None
    last_error: str | None
    at: datetime
    next_at: datetime | None
    first: float = field(default_factory=time.monotonic)


class FirstAttempts:
    """One intake batch's deliveries sent before their rows are written (the module's
    note): what the intake waits for, then writes with each row."""

    def __init__(self, sender: Sender) -> None:
        self.sender = sender
        self.items: dict[int, Item] = {}
        self._waiting = 0
        self._settled = asyncio.Event()

    def add(self, item: Item) -> None:
        item.unwritten = self
        self.items[item.id] = item
        self._waiting += 1

    def settle(self, item: Item) -> None:
        """The batch stops waiting for ``item``: it was attempted, or cannot be soon."""
        if item.settled or item.unwritten is not self:
            return
        item.settled = True
        self._waiting -= 1
        if self._waiting <= 0:
            self._settled.set()

    async def wait(self, seconds: float) -> None:
        """Until every delivery was attempted once or cannot be soon, at most ``seconds``."""
        if self._waiting > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._settled.wait(), seconds)

    def written(self) -> dict[int, tuple[Any, ...]]:
        """Each delivery's outcome as its row is written now (``projections.PER_OUTCOME``:
        what its outcome so far says); from here on its outcomes are recorded as every
        other delivery's."""
        columns: dict[int, tuple[Any, ...]] = {}
        for item in self.items.values():
            item.unwritten = None
            o = item.outcome
            item.outcome = None
            columns[item.id] = (
                NOT_ATTEMPTED
                if o is None
                else (o.status, o.attempts, o.last_status, o.last_error, o.at, o.next_at)
            )
        return columns

    def forget(self, ids: Iterable[int] | None = None) -> None:
        """These deliveries (all by default) have no row and never will: stop sending
        them, and record nothing of an attempt still in flight."""
        for item_id in list(self.items) if ids is None else ids:
            item = self.items.pop(item_id, None)
            if item is not None:
                self.sender._forget(item)


class Sender:
    def __init__(
        self,
        store: Store,
        renderer: Renderer,
        outbound: Outbound,
        settings: WebhooksSettings,
        disable: Disable,
    ) -> None:
        self.store = store
        self.engine = store.engine
        self.renderer = renderer
        self.outbound = outbound
        self.signer = Signer()
        self.disable = disable
        self.schedule = domain.parse_schedule(settings.retry_schedule)
        self.max_retry_after = settings.max_retry_after_seconds
        self.per_endpoint = settings.endpoint_concurrency
        self.concurrency = settings.concurrency
        self.disable_after = timedelta(seconds=settings.disable_after_seconds)
        self.keep = timedelta(seconds=settings.keep_seconds)
        self.targets: dict[str, Target] = {}
        self.queued: dict[int, Item] = {}  # by row id: waiting or in flight here
        self.in_flight = 0
        self.sent = 0  # attempts made, for health and tests
        self.delivered = 0
        self.runners: dict[str, ProjectionRunner] = {}
        self.endpoints: ProjectionRunner | None = None
        self._owned: set[tuple[str, int]] = set()
        self._loading: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self._timers: list[tuple[float, int, Lane]] = []
        self._tick = itertools.count()
        self._wake = asyncio.Event()
        self._outcomes: list[Outcome] = []
        # Deliveries finished here whose outcome is not written yet: a partition loaded
        # again meanwhile (its lease lapsed under load and came back) still lists them as
        # pending, and they must not go out twice.
        self._finished: set[int] = set()
        self._config_seq = -1
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self._waiters: set[asyncio.Future[Answer]] = set()  # attempts answered by callback
        # Events whose body is being rendered: the other endpoints' attempts waiting for it.
        self._rendering: dict[tuple[str, int], list[tuple[Target, Lane, Item]]] = {}
        self._stopping = False
        self._config_wanted = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    def follow(self, runners: dict[str, ProjectionRunner], endpoints: ProjectionRunner) -> None:
        """The intakes whose partitions this process owns, and the endpoints read model."""
        self.runners = runners
        self.endpoints = endpoints

    async def start(self) -> None:
        await self.reload_endpoints()
        self._tasks = [
            asyncio.create_task(self._dispatch(), name="webhooks-dispatch"),
            asyncio.create_task(
                _every(FLUSH_SECONDS, self._flush, "webhook_record_failed"), name="webhooks-record"
            ),
            asyncio.create_task(self._watch(), name="webhooks-ownership"),
            # Apart from ``_watch``: a long prune must not hold up following ownership.
            asyncio.create_task(
                _every(PRUNE_SECONDS, self.prune, "webhook_prune_failed"), name="webhooks-prune"
            ),
        ]

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._sends or self._waiters:
            await asyncio.wait({*self._sends, *self._waiters}, timeout=5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._flush()

    # -- intake ---------------------------------------------------------------------------------

    def offer(self, rows: list[dict[str, Any]]) -> None:
        """Rows the intake just queued (in log order), to be sent from this process."""
        for row in rows:
            key = (row["source"], row["part"])
            if key not in self._owned:
                # The intake owns it already, this sender not yet: wait for its load, so
                # the partition's older pending rows go first.
                self._loading.setdefault(key, [])
            waiting = self._loading.get(key)
            if waiting is not None:
                waiting.append(row)  # after the partition's older rows are loaded
            else:
                self._add(row)
        self._wake.set()

    def send_first(self, rows: list[dict[str, Any]]) -> FirstAttempts:
        """Start the deliveries of ``rows`` (in log order, ids taken, rows not written
        yet) that can go out at once; the batch the caller waits for and writes with."""
        batch = FirstAttempts(self)
        horizon = utcnow() - FIRST_HORIZON
        now = time.monotonic()
        blocked: set[tuple[str, str]] = set()  # a lane's later rows wait behind its first
        taken: set[tuple[str, str]] = set()  # lanes that hold only this batch's deliveries
        for row in rows:
            lane_key = (row["endpoint_id"], row["lane"])
            if lane_key in blocked:
                continue
            if lane_key not in taken:
                target = self.targets.get(row["endpoint_id"])
                lane = target.lanes.get(row["lane"]) if target is not None else None
                if (
                    target is None
                    or not (target.known and target.enabled)
                    or target.hold_until > now
                    or (lane is not None and lane.items)  # something older goes first
                    or (row["source"], row["part"]) not in self._owned
                    or (row["source"], row["part"]) in self._loading
                ):
                    blocked.add(lane_key)
                    continue
                taken.add(lane_key)
            if row["stored_at"] < horizon:
                blocked.add(lane_key)
                continue
            item = self._add(row)
            if item is not None:
                batch.add(item)
        if batch.items:
            self._wake.set()
        return batch

    def _forget(self, item: Item) -> None:
        item.void = True
        item.unwritten = None
        self.queued.pop(item.id, None)
        target = self.targets.get(item.row["endpoint_id"])
        lane = target.lanes.get(item.row["lane"]) if target is not None else None
        if lane is None or item not in lane.items:
            return
        if lane.busy and lane.items[0] is item:
            return  # in flight: ``_finish`` takes it out when the attempt ends
        lane.items.remove(item)
        if not lane.items and not lane.busy and target is not None:
            del target.lanes[lane.key]

    def _settle_lane(self, lane: Lane) -> None:
        for item in lane.items:
            if item.unwritten is not None:
                item.unwritten.settle(item)

    def _add(self, row: dict[str, Any]) -> Item | None:
        row_id = int(row["id"])
        if row_id in self._finished and not row.get("requeued"):
            return None
        existing = self.queued.get(row_id)
        if existing is not None:
            if row.get("requeued") or row["attempts"] < existing.attempts:
                existing.attempts, existing.due = row["attempts"], 0.0
            return None
        target = self.targets.get(row["endpoint_id"])
        if target is None:
            target = self.targets[row["endpoint_id"]] = Target(row["endpoint_id"])
            self._config_seq = -1  # not known yet: read the endpoints again
            self._config_wanted.set()
        lane = target.lanes.get(row["lane"])
        if lane is None:
            lane = target.lanes[row["lane"]] = Lane(row["lane"], target)
        item = Item(row_id, row, row["attempts"], self._due_of(row))
        if not lane.items or lane.items[-1].id < row_id:
            lane.items.append(item)  # the usual case: rows come in log order
        else:
            bisect.insort(lane.items, item, key=_item_id)
        self.queued[row_id] = item
        self._ready(lane)
        return item

    @staticmethod
    def _due_of(row: dict[str, Any]) -> float:
        at = row.get("next_attempt_at")
        if at is None or row.get("requeued"):
            return 0.0
        return time.monotonic() + max(0.0, (at - utcnow()).total_seconds())

    def _ready(self, lane: Lane) -> None:
        if lane.busy or lane.ready or not lane.items:
            return
        due = lane.items[0].due
        if due > time.monotonic():
            if not lane.timer:
                lane.timer = True
                heapq.heappush(self._timers, (due, next(self._tick), lane))
            return
        lane.ready = True
        lane.target.ready.append(lane)

    # -- dispatching ------------------------------------------------------------------------------

    async def _dispatch(self) -> None:
        while not self._stopping:
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, lane = heapq.heappop(self._timers)
                lane.timer = False
                self._ready(lane)
            wake_at = self._timers[0][0] if self._timers else now + 1.0
            for target in list(self.targets.values()):
                if not target.ready:
                    continue
                if not (target.known and target.enabled):
                    continue
                if target.hold_until > now:
                    wake_at = min(wake_at, target.hold_until)
                    continue
                while (
                    target.ready
                    and target.in_flight < self.per_endpoint
                    and self.in_flight < self.concurrency
                ):
                    lane = target.ready.popleft()
                    lane.ready = False
                    if lane.busy or not lane.items:
                        continue
                    if lane.items[0].due > now:
                        self._ready(lane)
                        continue
                    self._start(target, lane)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.001, wake_at - time.monotonic()))

    def _start(self, target: Target, lane: Lane) -> None:
        """An attempt at the lane's head. Its usual course takes no task: the body is
        made without reading the log (``Renderer.now``), the request goes on a
        connection that is open already, and its answer is judged in the future's
        callback (``_answered``). A body that needs the log read, endpoints to read
        again or a connection to open take a task (``_render_then_post``,
        ``_post_anew``)."""
        lane.busy = True
        target.in_flight += 1
        self.in_flight += 1
        item = lane.items[0]
        try:
            body = self.renderer.now(item.row) if self._config_current() else None
        except Exception:  # rendered again in a task, which says what fails
            body = None
        if body is not None:
            self._post(target, lane, item, body)
            return
        rendering = self._rendering.get((item.row["stream"], item.row["seq"]))
        if rendering is not None:  # for another endpoint: this one's attempt waits for it
            rendering.append((target, lane, item))
            return
        self._rendering[(item.row["stream"], item.row["seq"])] = []
        self._launch(self._render_then_post(target, lane, item))

    def _launch(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    def _config_current(self) -> bool:
        return self.endpoints is None or self.endpoints.checkpoint == self._config_seq

    async def _render_then_post(self, target: Target, lane: Lane, item: Item) -> None:
        """Render the event's body, once for every endpoint whose attempt at it starts
        meanwhile (``_rendering``), and send each."""
        key = (item.row["stream"], item.row["seq"])
        body: bytes | Exception | None
        reread = True  # the endpoints, if they changed
        try:
            try:
                body = await self.renderer.body(item.row)
            except Exception as exc:
                body = exc
            if isinstance(body, bytes) and not self._config_current():
                # An endpoint changed (a rotated secret, say) since they were read: sign
                # with what the read model has now, not what the next watch round loads.
                try:
                    await self.reload_endpoints()
                except Exception as exc:
                    log.warning("webhook_endpoints_not_read", error=str(exc) or repr(exc))
                    reread = False
        except BaseException:
            for t, lane_, i in [(target, lane, item), *self._rendering.pop(key, [])]:
                self._finish(t, lane_, i)
            raise
        for t, lane_, i in [(target, lane, item), *self._rendering.pop(key, [])]:
            if reread:
                self._rendered(t, lane_, i, body)
            else:  # not signed with secrets that may be stale: shortly, once more
                i.due = time.monotonic() + RENDER_RETRY_SECONDS
                self._finish(t, lane_, i)

    def _rendered(
        self, target: Target, lane: Lane, item: Item, body: bytes | Exception | None
    ) -> None:
        if isinstance(body, bytes):
            self._post(target, lane, item, body)
            return
        if body is None:
            self._done(lane, item, "failed", None, "the event cannot be rendered", utcnow())
        elif isinstance(body, ConfabError | TimeoutError | OSError):
            # The log cannot be read now: not the endpoint's failure.
            log.warning("webhook_render_failed", delivery=item.id, error=str(body))
            item.due = time.monotonic() + RENDER_RETRY_SECONDS
        else:
            log.error(
                "webhook_attempt_failed", endpoint_id=target.id, delivery=item.id, error=repr(body)
            )
            item.due = time.monotonic() + RENDER_RETRY_SECONDS
        self._finish(target, lane, item)

    def _post(self, target: Target, lane: Lane, item: Item, body: bytes) -> None:
        try:
            now = utcnow()
            message_id = message_id_of(item.row["stream"], item.row["seq"])
            secrets_ = domain.signing_secrets(target.secrets, now)
            headers = self.signer.headers(message_id, body, secrets_, now)
            self.sent += 1
            waiter = self.outbound.pipelined(target.url, body, headers)
        except Exception:
            self._failed_here(target, lane, item)
            return
        if waiter is None:  # no connection open to take it
            self._launch(self._post_anew(target, lane, item, body, headers))
            return
        self._waiters.add(waiter)
        answered = functools.partial(self._answered, target, lane, item, body, headers)
        waiter.add_done_callback(answered)

    def _answered(
        self,
        target: Target,
        lane: Lane,
        item: Item,
        body: bytes,
        headers: dict[str, str],
        waiter: asyncio.Future[Answer],
    ) -> None:
        self._waiters.discard(waiter)
        answer = self.outbound.answer_of(waiter)
        if answer is None:  # the connection closed before any byte of its answer: again
            self._launch(self._post_anew(target, lane, item, body, headers))
        else:
            self._settle(target, lane, item, answer)

    async def _post_anew(
        self, target: Target, lane: Lane, item: Item, body: bytes, headers: dict[str, str]
    ) -> None:
        try:
            answer = await self.outbound.post(target.url, body, headers)
        except Exception:
            self._failed_here(target, lane, item)
            return
        self._settle(target, lane, item, answer)

    def _settle(self, target: Target, lane: Lane, item: Item, answer: Answer) -> None:
        try:
            after = self._judge(target, lane, item, answer)
        except Exception:
            self._failed_here(target, lane, item)
            return
        for work in after:
            self._launch(work)
        self._finish(target, lane, item)

    def _failed_here(self, target: Target, lane: Lane, item: Item) -> None:
        """A fault of this process's, not the endpoint's: logged, tried again shortly."""
        log.exception("webhook_attempt_failed", endpoint_id=target.id, delivery=item.id)
        item.due = time.monotonic() + RENDER_RETRY_SECONDS
        self._finish(target, lane, item)

    def _finish(self, target: Target, lane: Lane, item: Item) -> None:
        """The attempt is over: the lane may send again, and what waits on it is told."""
        lane.busy = False
        target.in_flight -= 1
        self.in_flight -= 1
        if item.void and item in lane.items:
            lane.items.remove(item)
        now = time.monotonic()
        if target.hold_until > now or not target.enabled:
            for held in target.lanes.values():
                self._settle_lane(held)  # none of them goes out soon
        elif lane.items and lane.items[0].due > now:
            self._settle_lane(lane)  # its head waits for a retry: so does the rest
        if lane.key in target.lanes and not lane.items:
            del target.lanes[lane.key]
        else:
            self._ready(lane)
        self._wake.set()

    def _judge(
        self, target: Target, lane: Lane, item: Item, answer: Answer
    ) -> list[Coroutine[Any, Any, None]]:
        """What the answer means for the delivery and its endpoint, now; what is left to
        write elsewhere (the endpoint's health, its disabling) is returned to be run."""
        now = utcnow()
        kind = domain.outcome(answer.status)
        item.attempts += 1
        if kind == domain.DELIVERED:
            self.delivered += 1
            self._done(lane, item, "delivered", answer.status, None, now)
            if target.failing_since is not None:
                target.failing_since = None
                return [self._health(target.id, None, now, None)]
            return []
        error = answer.error or f"HTTP {answer.status}"
        if kind == domain.GONE:
            item.due = time.monotonic() + self.schedule[0]
            self._record(item, "pending", answer.status, error, now, None)
            return self._disable(target, "The endpoint answered 410 Gone.")
        retry_after = None
        if answer.status in (429, 503):
            retry_after = domain.parse_retry_after(answer.retry_after, now)
        delay = domain.retry_delay(
            self.schedule,
            item.attempts,
            retry_after=retry_after,
            max_retry_after=self.max_retry_after,
        )
        if delay is None:
            self._done(lane, item, "failed", answer.status, error, now)
        else:
            item.due = time.monotonic() + delay
            if kind == domain.ENDPOINT_DOWN:
                target.hold_until = max(target.hold_until, item.due)
            self._record(item, "pending", answer.status, error, now, now + timedelta(seconds=delay))
        if target.failing_since is None:
            target.failing_since = now
            return [self._health(target.id, now, None, error)]
        if now - target.failing_since > self.disable_after:
            days = (now - target.failing_since).total_seconds() / 86400
            return self._disable(
                target,
                f"No successful delivery since {target.failing_since.isoformat()} "
                f"({days:.1f} days); last error: {error}",
            )
        return []

    def _done(
        self,
        lane: Lane,
        item: Item,
        status: str,
        last_status: int | None,
        error: str | None,
        now: datetime,
    ) -> None:
        if lane.items and lane.items[0] is item:
            lane.items.pop(0)
        self.queued.pop(item.id, None)
        self._record(item, status, last_status, error, now, None)

    def _disable(self, target: Target, reason: str) -> list[Coroutine[Any, Any, None]]:
        """Disabled here at once (nothing more goes out to it); the event that tells
        every copy is what is returned, to be run."""
        if target.disabling or not target.enabled:
            return []
        target.disabling = True
        target.enabled = False
        return [self._tell_disabled(target, reason)]

    async def _tell_disabled(self, target: Target, reason: str) -> None:
        try:
            await self.disable(target.workspace_id, target.id, reason)
            log.warning("webhook_disabled", endpoint_id=target.id, reason=reason)
        except Exception as exc:
            log.warning("webhook_disable_failed", endpoint_id=target.id, error=str(exc))
        finally:
            target.disabling = False

    async def _health(
        self,
        endpoint_id: str,
        failing: datetime | None,
        success: datetime | None,
        error: str | None,
    ) -> None:
        values = {
            "failing_since": failing,
            "last_success_at": success,
            "last_error": error,
            "updated_at": utcnow(),
        }
        stmt = insert(HEALTH).values(endpoint_id=endpoint_id, **values)
        update = {"failing_since": failing, "updated_at": values["updated_at"]}
        if success is not None:
            update["last_success_at"] = success
        if error is not None:
            update["last_error"] = error
        try:
            async with self.engine.begin() as conn:
                await conn.execute(
                    stmt.on_conflict_do_update(index_elements=[HEALTH.c.endpoint_id], set_=update)
                )
        except Exception as exc:
            log.warning("webhook_health_not_saved", endpoint_id=endpoint_id, error=str(exc))

    # -- recording ---------------------------------------------------------------------------------

    def _record(
        self,
        item: Item,
        status: str,
        last_status: int | None,
        error: str | None,
        at: datetime,
        next_at: datetime | None,
    ) -> None:
        if item.void:
            return
        outcome = Outcome(item.id, status, item.attempts, last_status, error, at, next_at)
        if item.unwritten is not None:  # no row yet: it is written with this outcome
            item.outcome = outcome
            item.unwritten.settle(item)
            return
        self._outcomes.append(outcome)
        if status != "pending":
            self._finished.add(item.id)

    async def _flush(self) -> None:
        if not self._outcomes:
            return
        # The last outcome of each delivery wins.
        latest = {o.id: o for o in self._outcomes}
        outcomes = list(latest.values())
        self._outcomes = []
        try:
            async with self.engine.begin() as conn:
                result = await conn.execute(
                    RECORD,
                    {
                        "ids": [o.id for o in outcomes],
                        "statuses": [o.status for o in outcomes],
                        "attempts": [o.attempts for o in outcomes],
                        "last_statuses": [o.last_status for o in outcomes],
                        "errors": [o.last_error for o in outcomes],
                        "ats": [o.at for o in outcomes],
                        "next_ats": [o.next_at for o in outcomes],
                    },
                )
                matched = {int(r[0]) for r in result.all()}
        except BaseException:
            self._outcomes = outcomes + self._outcomes
            raise
        # A row handed over before its batch committed is matched a moment later.
        horizon = time.monotonic() - UNMATCHED_SECONDS
        later = [o for o in outcomes if o.id not in matched and o.first > horizon]
        self._outcomes = later + self._outcomes
        waiting = {o.id for o in self._outcomes}
        self._finished = {i for i in self._finished if i in waiting}

    # -- ownership, configuration, requeues --------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            try:
                await self._follow_ownership()
                if self.endpoints is not None and self.endpoints.checkpoint != self._config_seq:
                    await self.reload_endpoints()
                await self._requeued()
            except Exception as exc:
                log.warning("webhook_watch_failed", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._config_wanted.wait(), OWNERSHIP_SECONDS)
            self._config_wanted.clear()

    async def _follow_ownership(self) -> None:
        owned = {(source, k) for source, r in self.runners.items() for k in r.owned}
        lost, gained = self._owned - owned, owned - self._owned
        self._owned = owned
        if lost:
            self._let_go(lost)
        for key in sorted(gained):
            self._loading.setdefault(key, [])  # rows offered before it was seen wait there
        for key in sorted(gained):
            await self._load(key)

    def _let_go(self, lost: set[tuple[str, int]]) -> None:
        """Another copy sends these partitions' deliveries now; what is in flight finishes."""
        for target in self.targets.values():
            for lane in list(target.lanes.values()):
                keep = [
                    i
                    for i in lane.items
                    if (i.row["source"], i.row["part"]) not in lost
                    or (lane.busy and i is lane.items[0])
                ]
                for gone in lane.items:
                    if gone not in keep:
                        self.queued.pop(gone.id, None)
                lane.items = keep
        for key in lost:
            self._loading.pop(key, None)

    async def _load(self, key: tuple[str, int]) -> None:
        d = DELIVERIES
        source, part = key
        query = (
            sa.select(d)
            .where(d.c.status == "pending", d.c.source == source, d.c.part == part)
            .order_by(d.c.id)
        )
        try:
            async with self.engine.connect() as conn:
                rows = [dict(r._mapping) for r in (await conn.execute(query)).all()]
        except BaseException:
            self._owned.discard(key)  # tried again at the next round
            self._loading.pop(key, None)
            raise
        waiting = self._loading.pop(key, [])
        if key not in self._owned:
            return
        for row in rows + waiting:
            self._add(row)
        if rows:
            log.info("webhook_deliveries_loaded", source=source, partition=part, count=len(rows))
        self._wake.set()

    async def _requeued(self) -> None:
        if not self._owned:
            return
        found = [{**row, "requeued": True} for row in await self.store.take_requeued(self._owned)]
        for row in found:
            if (row["source"], row["part"]) not in self._loading:
                self._add(row)
        if found:
            self._wake.set()

    async def reload_endpoints(self) -> None:
        seq = self.endpoints.checkpoint if self.endpoints is not None else 0
        rows = await self.store.all_endpoints()
        seen = set()
        for row in rows:
            seen.add(row["id"])
            target = self.targets.get(row["id"])
            if target is None:
                target = self.targets[row["id"]] = Target(row["id"])
            was = target.enabled
            target.workspace_id = row["workspace_id"]
            target.url = row["url"]
            target.secrets = secrets_of(row["secrets"])
            target.enabled = row["enabled"] and not target.disabling
            target.known = True
            if row["failing_since"] is not None and target.failing_since is None:
                target.failing_since = row["failing_since"]
            if target.enabled and not was:
                target.hold_until = 0.0
                if target.failing_since is not None:
                    # Enabled again: a fresh start for "failing for days".
                    target.failing_since = None
                    await self._health(target.id, None, None, None)
        for endpoint_id in [t for t in self.targets if t not in seen]:
            target = self.targets.pop(endpoint_id)  # deleted: its rows were cancelled
            for lane in target.lanes.values():
                for item in lane.items:
                    self.queued.pop(item.id, None)
        self._config_seq = seq
        self._wake.set()

    # -- what an operator and the tests look at -------------------------------------------------

    def backlog(self) -> int:
        return len(self.queued)

    async def health(self) -> str:
        held = sum(1 for t in self.targets.values() if t.hold_until > time.monotonic())
        return (
            f"ok ({len(self.queued)} queued, {self.in_flight} in flight, {held} endpoints "
            f"held, partitions {len(self._owned)})"
        )

    async def prune(self) -> int:
        """Remove delivered and cancelled deliveries older than ``keep``; how many."""
        return await self.store.prune(utcnow() - self.keep)
