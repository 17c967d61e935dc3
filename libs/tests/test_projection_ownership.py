"""Partition ownership on its own (real PostgreSQL, no NATS): fair shares among the live
processes, nothing owned twice, and what a departed process held taken over."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from confab import bus
from confab.projection import Ownership, Projection, partition_holders
from libs.tests.test_projection import Counts
from libs.tests.test_projection_checkpoints import cut
from libs.tests.test_projection_partitions import PARTITIONS, Journal


@pytest.fixture
async def processes(fresh_database_url: str) -> AsyncIterator[list[Ownership]]:
    """The ownerships made in a test, all released at its end (before its database goes)."""
    made: list[Ownership] = []
    yield made
    for ownership in made:
        await ownership.release()


async def joined(made: list[Ownership], url: str, projection: Projection) -> Ownership:
    ownership = Ownership(url, projection)
    await ownership.connect()
    await ownership.join()
    made.append(ownership)
    return ownership


async def until(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not await condition():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        await asyncio.sleep(0.02)


async def holders(engine: AsyncEngine, projection: Projection) -> list[int]:
    async with engine.connect() as conn:
        return await partition_holders(conn, projection)


async def test_live_processes_take_fair_shares_and_one_takes_over_what_another_gave_up(
    processes: list[Ownership],
    fresh_database_url: str,
    engine: AsyncEngine,
    stream_spec: bus.StreamSpec,
) -> None:
    projection = Journal(stream_spec, "any")
    first = await joined(processes, fresh_database_url, projection)
    assert await first.balance() is True
    assert first.owned == set(range(PARTITIONS))
    assert first.describe() == f"partitions 0,1,2,3,4,5,6,7 of {PARTITIONS}"
    assert await first.balance() is False  # nothing changes while nobody comes or goes

    # A second process finds every partition taken until the first gives back its surplus.
    second = await joined(processes, fresh_database_url, projection)
    assert await second.balance() is False
    assert second.owned == set()
    assert second.describe() == f"partitions none of {PARTITIONS}"
    assert await first.balance() is True
    assert len(first.owned) == PARTITIONS // 2
    assert await second.balance() is True
    assert first.owned.isdisjoint(second.owned)
    assert first.owned | second.owned == set(range(PARTITIONS))
    assert await holders(engine, projection) == [PARTITIONS // 2] * 2

    # A third: shares of at most ceil(8 / 3) = 3, every partition still owned once.
    third = await joined(processes, fresh_database_url, projection)
    for _ in range(2):
        for ownership in (first, second, third):
            await ownership.balance()
    owned = [first.owned, second.owned, third.owned]
    assert sorted(map(len, owned), reverse=True) == [3, 3, 2]
    assert set().union(*owned) == set(range(PARTITIONS))
    assert sum(map(len, owned)) == PARTITIONS
    assert await holders(engine, projection) == [3, 3, 2]

    # The first goes (its locks with its connection): the others pick up its partitions.
    await first.release()
    assert first.owned == set()

    async def shared_by_two() -> bool:
        for ownership in (second, third):
            await ownership.balance()
        return len(second.owned) + len(third.owned) == PARTITIONS

    await until(shared_by_two, "the two left own every partition")
    assert second.owned.isdisjoint(third.owned)
    assert await holders(engine, projection) == [PARTITIONS // 2] * 2


async def test_one_process_leads_a_single_partition_and_a_standby_takes_over_a_lost_lock(
    processes: list[Ownership],
    fresh_database_url: str,
    engine: AsyncEngine,
    stream_spec: bus.StreamSpec,
) -> None:
    projection = Counts(stream_spec)
    first = await joined(processes, fresh_database_url, projection)
    second = await joined(processes, fresh_database_url, projection)
    await first.balance()
    await second.balance()
    leader, standby = (first, second) if first.owned else (second, first)
    assert (leader.owned, standby.owned) == ({0}, set())
    assert (leader.describe(), standby.describe()) == ("leader", "standby")
    assert first.member != second.member

    # The leader's lock connection is cut (as by a database restart or a network fault).
    assert leader._lock is not None
    await cut(fresh_database_url, leader._lock)

    async def leader_knows() -> bool:
        try:
            leader.check()
        except ConnectionError:
            return True
        return False

    await until(leader_knows, "the leader sees its lock connection is gone")
    with pytest.raises(ConnectionError):
        await leader.balance()

    async def standby_leads() -> bool:
        await standby.balance()
        return standby.owned == {0}

    await until(standby_leads, "the standby leads")
    assert await holders(engine, projection) == [1]


async def test_an_ownership_that_never_connected_or_was_released_owns_nothing(
    fresh_database_url: str, stream_spec: bus.StreamSpec
) -> None:
    ownership = Ownership(fresh_database_url, Journal(stream_spec, "any"))
    with pytest.raises(ConnectionError):
        ownership.check()
    with pytest.raises(ConnectionError):
        await ownership.join()
    await ownership.connect()
    await ownership.join()
    assert await ownership.balance() is True
    await ownership.release()
    assert ownership.owned == set()
    with pytest.raises(ConnectionError):
        await ownership.balance()
