"""Authority changes reach every enforcing process before the call that made them returns.

Bans, erasures and revocations are ``IDENTITY`` events. Every process that
enforces them (each gateway, each messaging copy, each fanout node) runs a
``Follower``: a JetStream consumer of its own on ``IDENTITY`` (headers only:
the subject says who, ``Confab-Event`` says what), whose handler applies each
event to the process's state and only then acknowledges it. The call that
appended a revoking event (identity's handler) then ``fence``s on it: it waits
until every live follower has acknowledged that sequence. So when the reply
leaves, every enforcing process already acts on the change — there is no
window in which a gateway, a messaging copy or a socket still obeys the old
state.

- Followers are the consumers with metadata ``confab-authority``. The fence
  counts only those with a bound subscriber (``push_bound``): a follower whose
  process died stops counting at once, and the server deletes its consumer
  after ``INACTIVE_SECONDS``.
- A follower starts at the stream's end (it acts on changes made while it
  runs; a process that needs older facts reads them from a read model, and
  ``start`` reports the sequence it starts after). If its consumer disappears
  (a NATS server restart), it makes it again from the sequence after the last
  it applied, so it misses nothing.
- The fence is bounded: a process that cannot keep up (partitioned, stalled)
  does not hold the call forever. It still applies the change when it catches
  up; the fence logs which consumers it gave up on.

The same pair serves other authorities kept in memory: a ``Watch`` names the
stream, the subjects and the changes a follower acts on, and its own metadata
key, so its fence counts only its own followers (messaging's workspace
settings — automatic-moderation rules and shadow bans — follow
``conv.evt.*._settings`` so, and a post never reads them from the log).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from confab.bus import IDENTITY
from confab.events import H_EVENT
from confab.logging import get_logger

log = get_logger("confab.authority")

METADATA_KEY = "confab-authority"
INACTIVE_SECONDS = 10.0
CHECK_SECONDS = 5.0  # how often a follower makes sure its consumer still exists
FENCE_SECONDS = 2.0

# What the followers act on; ``user.upserted`` and ``session.issued`` pass through.
USER_BANNED = "user.banned"
USER_UNBANNED = "user.unbanned"
USER_ERASED = "user.erased"
SESSION_REVOKED = "session.revoked"
API_KEY_REVOKED = "api_key.revoked"
# A staff member's role changed or they left the team: cached dashboard principals end
# and their sockets close (they sign in again with what they may do now).
STAFF_ROLE_CHANGED = "staff.role_changed"
STAFF_REMOVED = "staff.removed"
REVOKING = frozenset(
    {
        USER_BANNED,
        USER_UNBANNED,
        USER_ERASED,
        SESSION_REVOKED,
        API_KEY_REVOKED,
        STAFF_ROLE_CHANGED,
        STAFF_REMOVED,
    }
)


@dataclass(frozen=True, slots=True)
class Change:
    """One ``IDENTITY`` event as a follower sees it: ``identity.evt.<ws>.<kind>.<id>``."""

    type: str
    workspace_id: str
    kind: str  # user, session, api_key, workspace
    entity_id: str
    seq: int


Handler = Callable[[Change], Awaitable[None] | None]


def change_of(subject: str, event_type: str, seq: int) -> Change | None:
    parts = subject.split(".")
    if len(parts) != 5 or parts[0] != "identity" or parts[1] != "evt":
        return None
    return Change(event_type, parts[2], parts[3], parts[4], seq)


@dataclass(frozen=True, slots=True)
class Watch:
    """What a kind of follower follows: a stream's subjects, how a stored event becomes a
    ``Change`` (None: passed over), which change types it acts on (None: all), and the
    consumer metadata key that its fences count."""

    stream: str
    subject: str
    parse: Callable[[str, str, int], Change | None]
    acts_on: frozenset[str] | None
    key: str


IDENTITY_WATCH = Watch(IDENTITY.name, IDENTITY.subjects[0], change_of, REVOKING, METADATA_KEY)


class Follower:
    """Applies every ``IDENTITY`` change with ``handle`` (in order), then acknowledges it."""

    def __init__(
        self, js: JetStreamContext, service: str, handle: Handler, watch: Watch = IDENTITY_WATCH
    ) -> None:
        self.js = js
        self.handle = handle
        self.watch = watch
        self.name = f"authority-{service}-{secrets.token_hex(6)}"
        self.applied = 0  # the last stream sequence applied (or skipped)
        self._sub: object | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, wait: float = 60.0) -> int:
        """Follow from the end of the stream; the sequence it starts after. The stream is
        identity's to declare: a process that starts first waits up to ``wait`` for it."""
        deadline = time.monotonic() + wait
        while True:
            try:
                info = await self.js.stream_info(self.watch.stream)
                break
            except NotFoundError:
                if time.monotonic() >= deadline:
                    raise
                await asyncio.sleep(0.2)
        self.applied = info.state.last_seq
        await self._subscribe(DeliverPolicy.BY_START_SEQUENCE, self.applied + 1)
        self._task = asyncio.create_task(self._watch(), name=self.name)
        return self.applied

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._unsubscribe()
        with contextlib.suppress(Exception):
            await self.js.delete_consumer(self.watch.stream, self.name)

    async def _subscribe(self, policy: DeliverPolicy, start: int) -> None:
        config = ConsumerConfig(
            name=self.name,
            deliver_policy=policy,
            opt_start_seq=start if policy is DeliverPolicy.BY_START_SEQUENCE else None,
            ack_policy=AckPolicy.EXPLICIT,
            headers_only=True,
            inactive_threshold=INACTIVE_SECONDS,
            max_ack_pending=1000,
            metadata={self.watch.key: "1"},
        )
        self._sub = await self.js.subscribe(
            self.watch.subject,
            stream=self.watch.stream,
            cb=self._on_message,
            manual_ack=True,
            config=config,
        )

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()  # type: ignore[attr-defined]

    async def _on_message(self, msg: Msg) -> None:
        seq = msg.metadata.sequence.stream
        if seq > self.applied:
            acts_on = self.watch.acts_on
            change = self.watch.parse(msg.subject, (msg.headers or {}).get(H_EVENT, ""), seq)
            if change is not None and (acts_on is None or change.type in acts_on):
                try:
                    done = self.handle(change)
                    if inspect.isawaitable(done):
                        await done
                except Exception:
                    log.exception("authority_change_failed", type=change.type, seq=seq)
            self.applied = seq
        await msg.ack()

    async def _watch(self) -> None:
        """Make the consumer again if it is gone (a NATS restart), from where it stopped."""
        while True:
            await asyncio.sleep(CHECK_SECONDS)
            try:
                await self.js.consumer_info(self.watch.stream, self.name)
            except NotFoundError:
                log.warning("authority_consumer_lost", consumer=self.name, applied=self.applied)
                await self._unsubscribe()
                try:
                    await self._subscribe(DeliverPolicy.BY_START_SEQUENCE, self.applied + 1)
                except Exception as exc:  # NATS still away: the next round tries again
                    log.warning("authority_consumer_not_made", error=str(exc))
            except Exception as exc:
                log.warning("authority_consumer_unchecked", error=str(exc))


async def fence(
    js: JetStreamContext,
    seq: int,
    *,
    timeout: float = FENCE_SECONDS,
    watch: Watch = IDENTITY_WATCH,
) -> bool:
    """Wait until every live follower of ``watch`` has applied its stream's sequence ``seq``.

    False (and a warning naming the laggards) if some had not within ``timeout``.
    """
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        lagging = [
            c.name
            for c in await js.consumers_info(watch.stream)
            if (c.config.metadata or {}).get(watch.key)
            and c.push_bound
            and (c.ack_floor is None or (c.ack_floor.stream_seq or 0) < seq)
        ]
        if not lagging:
            return True
        if time.monotonic() >= deadline:
            log.warning("authority_fence_timeout", seq=seq, lagging=lagging)
            return False
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.02)
