"""Fixtures for every test directory: real backends, see `confab_infra.testing`.

`backends` starts (or finds) NATS, PostgreSQL and S3 once per session, and only when a
test asks for it; `CONFAB_TEST_BACKENDS` = embedded (default) | containers | external.
"""

from collections.abc import Iterator

import pytest

from confab_infra.backends import BackendError
from confab_infra.testing import BackendsUnavailable, TestBackends, fresh_database, open_backends


@pytest.fixture(scope="session")
def backends() -> Iterator[TestBackends]:
    try:
        with open_backends() as found:
            yield found
    except BackendsUnavailable as exc:
        pytest.skip(str(exc))
    except BackendError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture
def fresh_database_url(backends: TestBackends) -> Iterator[str]:
    """A new empty database on the session's server, dropped after the test."""
    with fresh_database(backends.database_url) as url:
        yield url
