"""The decision engine: due pending notifications into decided ones, in transactions.

``tick(now)`` takes the pending rows of this process's partitions that are due at
``now`` (``FOR UPDATE SKIP LOCKED``: two copies never decide one row), gathers what
each decision needs (read positions, the messages, recipients and senders, preferences,
the user's last notification, presence), runs ``domain.decide`` and writes the outcome
in the same transaction: a ``Send`` becomes an ``outbox`` row (its id derived from
user, conversation and last message, so a second decision of the same thing inserts
nothing) and moves ``notified``; a ``Drop`` deletes the pending row; a ``Later`` moves
its due time. Then it hands the new outbox rows to the sender.

Time is a parameter: ``tick`` takes ``now``, and ``run`` reads it from the clock it was
given, so tests drive it without waiting. A crash before the commit leaves the pending
row as it was (decided again, the same way); after it, the outbox row is there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from confab.contracts.events.notifier import PreferencesSet
from confab.logging import get_logger
from confab_notifier import domain
from confab_notifier.domain import Candidate, Drop, Later, MessageRef, Send
from confab_notifier.presence import Presence
from confab_notifier.store import TABLES

log = get_logger("confab.notifier.engine")

Clock = Callable[[], datetime]
Offer = Callable[[list[dict[str, Any]]], None]
_PREFS = msgspec.json.Decoder(PreferencesSet)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Engine:
    def __init__(
        self,
        engine: AsyncEngine,
        owned: Callable[[], set[int]],
        presence: Presence | None,
        *,
        offer: Offer,
        clock: Clock = utcnow,
        max_age: float = 24 * 3600.0,
        batch: int = 500,
        tick_seconds: float = 0.25,
    ) -> None:
        self.engine = engine
        self.owned = owned
        self.presence = presence
        self.offer = offer
        self.clock = clock
        self.max_age = timedelta(seconds=max_age)
        self.batch = batch
        self.tick_seconds = tick_seconds
        self.decided = 0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.t = TABLES

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="notifier-engine")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                n = await self.tick(self.clock())
            except Exception:
                log.exception("notifier_tick_failed")
                n = 0
            if n < self.batch:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.tick_seconds)

    async def tick(self, now: datetime) -> int:
        """Decide what is due at ``now`` in the owned partitions; how many were decided."""
        owned = sorted(self.owned())
        if not owned:
            return 0
        p = self.t.pending
        async with self.engine.begin() as conn:
            rows = (
                await conn.execute(
                    sa.select(p)
                    .where(p.c.part.in_(owned), p.c.due_at <= now)
                    .order_by(p.c.due_at)
                    .limit(self.batch)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not rows:
                return 0
            candidates = await self._gather(conn, [dict(r._mapping) for r in rows])
            sent = await self._write(conn, candidates, now)
        self.decided += len(rows)
        if sent:
            self.offer(sent)
        return len(rows)

    async def _gather(
        self, conn: AsyncConnection, rows: list[dict[str, Any]]
    ) -> list[tuple[dict[str, Any], Candidate]]:
        t = self.t
        pairs = [(r["conversation_id"], r["user_id"]) for r in rows]
        convs = sorted({r["conversation_id"] for r in rows})
        users = sorted({r["user_id"] for r in rows})
        m = t.members
        members = {
            (x.conversation_id, x.user_id): x.read_up_to
            for x in await conn.execute(
                sa.select(m.c.conversation_id, m.c.user_id, m.c.read_up_to).where(
                    sa.tuple_(m.c.conversation_id, m.c.user_id).in_(pairs)
                )
            )
        }
        lowest: dict[str, int] = {}
        for r in rows:
            lowest[r["conversation_id"]] = min(
                lowest.get(r["conversation_id"], r["first_seq"]), r["first_seq"]
            )
        msg = t.messages
        by_conv: dict[str, list[Any]] = {}
        found = await conn.execute(
            sa.select(
                msg.c.conversation_id,
                msg.c.seq,
                msg.c.message_id,
                msg.c.sender_id,
                msg.c.gone,
                msg.c.mentions,
                msg.c.at,
            )
            .where(msg.c.conversation_id.in_(convs))
            .where(msg.c.seq >= min(lowest.values()))
            .order_by(msg.c.conversation_id, msg.c.seq)
        )
        for x in found:
            if x.seq >= lowest[x.conversation_id]:
                by_conv.setdefault(x.conversation_id, []).append(x)
        senders = {x.sender_id for xs in by_conv.values() for x in xs if x.sender_id}
        u = t.users
        people = {
            x.user_id: x
            for x in await conn.execute(
                sa.select(u.c.user_id, u.c.erased, u.c.banned).where(
                    u.c.user_id.in_(sorted(set(users) | senders))
                )
            )
        }
        pr = t.prefs
        prefs = {
            x.user_id: domain.preferences_of(_PREFS.decode(x.data))
            for x in await conn.execute(
                sa.select(pr.c.user_id, pr.c.data).where(
                    pr.c.user_id.in_(users), pr.c.data.is_not(None)
                )
            )
        }
        n = t.notified
        last = {
            x.user_id: x.at
            for x in await conn.execute(
                sa.select(n.c.user_id, sa.func.max(n.c.at).label("at"))
                .where(n.c.user_id.in_(users))
                .group_by(n.c.user_id)
            )
        }
        out = []
        for r in rows:
            cid, uid = r["conversation_id"], r["user_id"]
            person = people.get(uid)
            messages = tuple(
                MessageRef(
                    seq=x.seq,
                    message_id=x.message_id,
                    sender_id=x.sender_id,
                    at=x.at,
                    gone=x.gone,
                    sender_erased=bool(
                        x.sender_id and getattr(people.get(x.sender_id), "erased", False)
                    ),
                    mentions=tuple(x.mentions or ()),
                )
                for x in by_conv.get(cid, ())
                if r["first_seq"] <= x.seq <= r["last_seq"]
            )
            out.append(
                (
                    r,
                    Candidate(
                        workspace_id=r["workspace_id"],
                        user_id=uid,
                        conversation_id=cid,
                        first_seq=r["first_seq"],
                        last_seq=r["last_seq"],
                        messages=messages,
                        read_up_to=members.get((cid, uid), 0),
                        member=(cid, uid) in members,
                        erased=bool(person and person.erased),
                        banned=bool(person and person.banned),
                        prefs=prefs.get(uid, domain.DEFAULT_PREFERENCES),
                        watching=bool(self.presence and self.presence.watching(uid, cid)),
                        last_notified_at=last.get(uid),
                        max_age=self.max_age,
                    ),
                )
            )
        return out

    async def _write(
        self,
        conn: AsyncConnection,
        candidates: list[tuple[dict[str, Any], Candidate]],
        now: datetime,
    ) -> list[dict[str, Any]]:
        t = self.t
        p = t.pending
        done: list[tuple[str, str]] = []
        later: list[dict[str, Any]] = []
        outbox: list[dict[str, Any]] = []
        notified: list[dict[str, Any]] = []
        for row, c in candidates:
            decision = domain.decide(c, now)
            key = (row["user_id"], row["conversation_id"])
            if isinstance(decision, Later):
                later.append({"u": key[0], "c": key[1], "due": decision.until})
                continue
            done.append(key)
            if isinstance(decision, Drop):
                continue
            assert isinstance(decision, Send)
            outbox.append(
                {
                    "id": decision.notification_id,
                    "workspace_id": c.workspace_id,
                    "user_id": c.user_id,
                    "conversation_id": c.conversation_id,
                    "part": row["part"],
                    "first_seq": c.first_seq,
                    "last_seq": c.last_seq,
                    "message_ids": [m.message_id for m in decision.messages],
                    "mentioned": decision.mentioned,
                    "created_at": now,
                    "next_attempt_at": now,
                }
            )
            notified.append(
                {"user_id": c.user_id, "conversation_id": c.conversation_id,
                 "up_to": c.last_seq, "at": now}
            )  # fmt: skip
        if done:
            await conn.execute(
                p.delete().where(sa.tuple_(p.c.user_id, p.c.conversation_id).in_(done))
            )
        if later:
            await conn.execute(
                p.update()
                .where(p.c.user_id == sa.bindparam("u"), p.c.conversation_id == sa.bindparam("c"))
                .values(due_at=sa.bindparam("due")),
                later,
            )
        sent: list[dict[str, Any]] = []
        if outbox:
            o = t.outbox
            result = await conn.execute(
                insert(o).on_conflict_do_nothing(index_elements=[o.c.id]).returning(*o.columns),
                outbox,
            )
            sent = [dict(r._mapping) for r in result.all()]
            n = t.notified
            stmt = insert(n)
            await conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=[n.c.user_id, n.c.conversation_id],
                    set_={"up_to": stmt.excluded.up_to, "at": stmt.excluded.at},
                ),
                notified,
            )
        return sent
