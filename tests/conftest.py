"""Fixtures of the cross-service tests: one ``confab up`` for the session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest

from confab_infra.testing import TestBackends, fresh_database
from tests.stack import RunningStack, backend_flags, running_stack


@pytest.fixture(scope="session")
def stack(
    backends: TestBackends, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    with fresh_database(backends.database_url) as database_url:
        data_dir = tmp_path_factory.mktemp("stack")
        with running_stack(data_dir, *backend_flags(backends, database_url)) as running:
            yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session
